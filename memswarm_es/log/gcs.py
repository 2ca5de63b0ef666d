"""The event log in a Google Cloud Storage bucket: immutable objects, one per appended batch.

Layout under ``prefix``: ``log/{first position:020d}`` holds a batch (msgpack: a format tag and
the batch's events, sealed exactly as the SQL log seals them); ``head`` is a hint naming the last
batch object a writer made.

Object storage has no transactions, so every rule is enforced by one create-only write:

- **Claiming positions.** A writer that has read the log up to its head ``h`` creates
  ``log/{h+1}`` with ``if_generation_match=0``. Every batch object starts right after the end
  of the batch before it, so two writers who read the same head name the same object and only
  one create succeeds; the loser gets 412, reads the batches it missed, and tries again (with
  backoff, a bounded number of times). A batch is one object, so it is all or nothing.
- **Event ids and versions.** Before claiming, a writer has read every batch up to the head and
  knows every recorded ``event_id`` and each memory's last version. Because any other append
  in between must have claimed the very position this writer is claiming, a successful create
  proves nothing was appended since that check: ids and ``(memory_id, version)`` stay unique
  across writers. A retry after a lost response (the create succeeded, the reply did not
  arrive) gets 412, reads its own batch back, and returns it as the SQL log returns a retry.
- **The head** is found from the hint plus a listing that starts at the hinted object (a few
  objects at most), and the hint is never trusted blindly: a missing hinted object means a
  full listing. Reading is one request per batch object, not per event.
- **The chain** continues across objects; every event is verified against the previous hash as
  it is read, so a damaged or foreign object is reported, never folded.

The log keeps the events it has read in this process (reads after the first are served from
there, refreshed from the bucket); that bounds it to logs that fit in memory.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from ..errors import (
    ConflictError,
    CorruptLogError,
    IdempotencyError,
    IntegrityError,
    LogNotFoundError,
    StorageError,
)
from ..events import GENESIS_HASH, Event, NewEvent, decode, encode, new_id
from ..scopes import Scope
from .base import (
    Digest,
    EventFilter,
    EventLog,
    backoff,
    check_batch,
    check_import,
    prepare_append,
    problem_with,
)

FORMAT = "memswarm-gcs-batch-1"
_CLAIM_ATTEMPTS = 60


class GCSEventLog(EventLog):
    """An :class:`EventLog` in ``bucket`` under ``prefix``, safe with many writers anywhere."""

    def __init__(self, bucket: str, prefix: str = "memswarm/",
                 client: storage.Client | None = None, retry_deadline: float = 60.0,
                 create: bool = True) -> None:
        """``retry_deadline``: how long transient faults (5xx, resets, timeouts) are retried,
        with exponential backoff from 0.1 s, before an operation fails with
        :class:`StorageError`. ``create=False`` opens an existing log only: a prefix without
        one raises :class:`LogNotFoundError`."""
        super().__init__()
        # Create-only writes are safe to retry too: a retry of a create that succeeded gets
        # 412 and the batch is found by its event ids.
        self._retry = DEFAULT_RETRY.with_deadline(retry_deadline).with_delay(
            initial=0.1, maximum=5.0, multiplier=2.0)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        self._client = client or storage.Client()
        self._bucket = self._client.bucket(bucket)
        try:
            if not self._bucket.exists(retry=self._retry):
                raise StorageError(f"bucket {bucket!r} does not exist")
        except gexc.Forbidden as exc:
            raise StorageError(f"access to bucket {bucket!r} denied: {exc.message}") from exc
        except gexc.GoogleAPIError as exc:
            raise StorageError(f"bucket {bucket!r} cannot be reached: {exc}") from exc
        self._lock = threading.RLock()
        self._events: list[Event] = []
        self._objects: list[tuple[int, int]] = []  # (first position, generation) per batch
        self._ids: dict[str, Event] = {}
        self._versions: dict[str, int] = {}
        self._identity = self._load_identity(create)

    def _load_identity(self, create: bool) -> str:
        """The log's id from ``identity`` under the prefix; made (create-only, so processes
        that start a log at once agree on one) with a new log, or for a log made before logs
        had one."""
        blob = self._bucket.blob(f"{self.prefix}identity")
        for _ in range(3):
            try:
                return blob.download_as_text(retry=self._retry)
            except gexc.NotFound:
                if not create and not self._list_from(None):
                    raise LogNotFoundError(f"no MemSwarm log under {self.prefix!r}") from None
            except gexc.GoogleAPIError as exc:
                raise StorageError(f"reading the log's identity failed: {exc}") from exc
            try:
                blob.upload_from_string(new_id(), if_generation_match=0, retry=self._retry)
            except gexc.PreconditionFailed:
                continue  # another writer made it first: read theirs
            except gexc.GoogleAPIError as exc:
                raise StorageError(f"creating the log's identity failed: {exc}") from exc
        raise StorageError("the log's identity could not be read")

    def identity(self) -> str:
        return self._identity

    # --- names ---------------------------------------------------------------------------------

    def _name(self, first: int) -> str:
        return f"{self.prefix}log/{first:020d}"

    def _first(self, name: str) -> int:
        tail = name[len(self.prefix) + 4:]
        if not tail.isdigit() or len(tail) != 20:
            raise CorruptLogError(f"object {name!r} in the log's prefix is not a batch")
        return int(tail)

    # --- reading the bucket --------------------------------------------------------------------

    def _refresh(self) -> None:
        """Read the batches after the ones already read (one listing, one GET per batch)."""
        with self._lock:
            start = self._name(len(self._events) + 1)
            try:
                blobs = list(self._client.list_blobs(self._bucket, prefix=f"{self.prefix}log/",
                                                     start_offset=start, retry=self._retry))
            except gexc.GoogleAPIError as exc:
                raise StorageError(f"listing the log failed: {exc}") from exc
            for blob in blobs:
                first = self._first(blob.name)
                if first != len(self._events) + 1:
                    raise IntegrityError(f"batch {blob.name} does not follow position "
                                         f"{len(self._events)}", len(self._events) + 1)
                self._load(blob, first)

    def _load(self, blob: storage.Blob, first: int) -> None:
        try:
            data = blob.download_as_bytes(retry=self._retry)
        except gexc.GoogleAPIError as exc:
            raise StorageError(f"reading {blob.name} failed: {exc}") from exc
        events = _decode_batch(blob.name, data)
        prev = self._events[-1].hash if self._events else GENESIS_HASH
        for offset, event in enumerate(events):
            problem = problem_with(event, first + offset, prev)
            if problem:
                raise IntegrityError(f"position {first + offset}: {problem}", first + offset)
            prev = event.hash
        self._objects.append((first, blob.generation))
        for event in events:
            self._events.append(event)
            self._ids[event.event_id] = event
            if event.memory_id is not None and event.version is not None:
                self._versions[event.memory_id] = event.version

    # --- EventLog ------------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], expected_head: int | None = None) -> list[Event]:
        if not events:
            return []
        check_batch(events)
        with self._lock:
            for attempt in range(_CLAIM_ATTEMPTS):
                self._refresh()
                sealed, retried = prepare_append(events, expected_head, self._ids,
                                                 self._versions, self._events)
                if retried:
                    return sealed
                head = sealed[0].position - 1
                if self._claim(head + 1, sealed):
                    self._write_hint(head + 1)
                    self._notify()
                    return sealed
                backoff(attempt, cap=0.2)
        raise StorageError(f"could not claim a position after {_CLAIM_ATTEMPTS} attempts")

    def import_events(self, events: Sequence[Event]) -> int:
        if not events:
            return self.head()
        with self._lock:
            self._refresh()
            last = self._events[-1] if self._events else None
            check_import(events, len(self._events), last.hash if last else GENESIS_HASH)
            clash = [e.event_id for e in events if e.event_id in self._ids]
            if clash:
                raise IdempotencyError(f"event_id {clash[0]!r} is already recorded")
            if not self._claim(events[0].position, list(events)):
                raise ConflictError(f"position {events[0].position} was taken while importing")
            self._write_hint(events[0].position)
        self._notify()
        return events[-1].position

    def _claim(self, first: int, sealed: list[Event]) -> bool:
        """Create the batch object; False if another writer holds the position."""
        blob = self._bucket.blob(self._name(first))
        try:
            blob.upload_from_string(_encode_batch(sealed), if_generation_match=0,
                                    content_type="application/x-msgpack", retry=self._retry)
        except gexc.PreconditionFailed:
            return False  # taken (possibly by our own create whose reply was lost)
        except gexc.GoogleAPIError as exc:
            raise StorageError(f"appending failed: {exc}") from exc
        self._objects.append((first, blob.generation))
        for event in sealed:
            self._events.append(event)
            self._ids[event.event_id] = event
            if event.memory_id is not None and event.version is not None:
                self._versions[event.memory_id] = event.version
        return True

    def _write_hint(self, first: int) -> None:
        # Only a hint: readers list from it and fall back to a full listing if it is wrong.
        with contextlib.suppress(gexc.GoogleAPIError):
            self._bucket.blob(f"{self.prefix}head").upload_from_string(str(first))

    def read(self, after: int = 0, limit: int | None = None) -> list[Event]:
        self._refresh()
        with self._lock:
            end = None if limit is None else max(after, 0) + limit
            return self._events[max(after, 0):end]

    def query(self, where: EventFilter, after: int = 0, limit: int | None = None,
              reverse: bool = False) -> list[Event]:
        self._refresh()
        with self._lock:
            candidates = self._events[max(after, 0):]
        return where.take(reversed(candidates) if reverse else candidates, limit)

    def head(self) -> int:
        """The last position: after the batches already read, one listing from the last of
        them; else from the hinted batch (checked to exist), reading only the last batch."""
        with self._lock:
            if self._events:
                self._refresh()
                return len(self._events)
        blobs = self._list_from(self._hint())
        if not blobs:
            return 0
        last = blobs[-1]
        data = last.download_as_bytes(retry=self._retry)
        return self._first(last.name) + len(_decode_batch(last.name, data)) - 1

    def _hint(self) -> int | None:
        try:
            return int(self._bucket.blob(f"{self.prefix}head").download_as_text())
        except (gexc.NotFound, ValueError):
            return None

    def _list_from(self, first: int | None) -> list[storage.Blob]:
        """The batch objects from ``first`` on, or all of them if that object is not there."""
        log_prefix = f"{self.prefix}log/"
        try:
            if first is not None:
                blobs = list(self._client.list_blobs(self._bucket, prefix=log_prefix,
                                                     start_offset=self._name(first),
                                                     retry=self._retry))
                if blobs and blobs[0].name == self._name(first):
                    return blobs
            return list(self._client.list_blobs(self._bucket, prefix=log_prefix,
                                                retry=self._retry))
        except gexc.GoogleAPIError as exc:
            raise StorageError(f"listing the log failed: {exc}") from exc

    def digest(self) -> Digest:
        self._refresh()
        with self._lock:
            if not self._events:
                return Digest(0, GENESIS_HASH)
            return Digest(len(self._events), self._events[-1].hash)

    def redact(self, positions: Sequence[int]) -> int:
        """Rewrite the batches holding ``positions`` without those payloads (the one overwrite
        the log allows, conditional on the batch's generation)."""
        self._refresh()
        removed = 0
        with self._lock:
            wanted = {p for p in positions if 1 <= p <= len(self._events)
                      and self._events[p - 1].payload is not None}
            for index, (first, generation) in enumerate(self._objects):
                end = (self._objects[index + 1][0] if index + 1 < len(self._objects)
                       else len(self._events) + 1)
                hit = [p for p in wanted if first <= p < end]
                if not hit:
                    continue
                for p in hit:
                    event = self._events[p - 1]
                    self._events[p - 1] = blank = replace(event, payload=None)
                    self._ids[event.event_id] = blank
                blob = self._bucket.blob(self._name(first))
                try:
                    blob.upload_from_string(_encode_batch(self._events[first - 1:end - 1]),
                                            if_generation_match=generation, retry=self._retry)
                except gexc.GoogleAPIError as exc:
                    raise StorageError(f"redacting {blob.name} failed: {exc}") from exc
                self._objects[index] = (first, blob.generation)
                removed += len(hit)
        return removed


def _encode_batch(events: Sequence[Event]) -> bytes:
    return encode([FORMAT, [
        [e.position, e.event_id, e.type, e.scope.agent_id, e.scope.group_id, e.scope.context_id,
         e.actor, e.memory_id, e.version, e.recorded_at_us, e.schema, e.payload,
         e.payload_hash, e.hash] for e in events]])


def _decode_batch(name: str, data: bytes) -> list[Event]:
    try:
        tag, rows = decode(data)
        if tag != FORMAT:
            raise ValueError(f"format {tag!r}")
        return [_event(row) for row in rows]
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptLogError(f"object {name!r} is not a MemSwarm batch: {exc}") from exc


def _event(row: list[Any]) -> Event:
    (position, event_id, type, agent_id, group_id, context_id, actor, memory_id, version,
     recorded_at_us, schema, payload, p_hash, hash) = row
    return Event(position=position, event_id=event_id, type=type,
                 scope=Scope(agent_id, group_id, context_id), actor=actor, memory_id=memory_id,
                 version=version, recorded_at_us=recorded_at_us, payload=payload,
                 payload_hash=p_hash, hash=hash, schema=schema)
