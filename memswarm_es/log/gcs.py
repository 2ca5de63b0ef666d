"""The event log in a Google Cloud Storage bucket: immutable objects, one per appended batch.

Layout under ``prefix``: ``log/{first position:020d}`` holds a batch (msgpack: a format tag and
the batch's events, sealed exactly as the SQL log seals them); ``head`` is a hint naming the last
batch object a writer made; ``identity`` holds the log's id; ``clock`` is rewritten when a writer
needs the store's time.

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
- **A log put back from a copy** while this process has it open is noticed at the next read
  or append: the listing starts at the last batch this process read, which must still be
  there ending with the event it read last (a redaction's rewrite keeps that hash). If it is
  not, the process reads the log again from its start, so an append follows the copy's head.
- **The chain** continues across objects; every event is verified against the previous hash as
  it is read, so a damaged or foreign object is reported, never folded. A batch whose fields
  have the wrong types (another program's) is a :class:`CorruptLogError` naming the object.
- **Time comes from the store.** ``recorded_at`` is the store's clock, not this machine's: the
  time the store stamped on the last object this process wrote (every append writes one; a
  writer that has not written for 30 s rewrites ``clock`` first), moved on by the monotonic
  clock since. A client whose wall clock is off by a day records the right times; the skew
  left is the request's latency.
- **Redaction** (the one overwrite) downloads the batch afresh, checks it against the chain,
  removes the payloads and rewrites it on condition that its generation did not change; when
  another process rewrote it in between (412), it starts again from the new copy, a bounded
  number of times, and raises :class:`StorageError` rather than report a removal that did not
  happen.

The log keeps the events it has read in this process (reads after the first are served from
there, refreshed from the bucket); that bounds it to logs that fit in memory. Whenever that
cache takes in a ``memory.forgotten`` event (appended here, read from another process's batch,
or imported), the payloads of every earlier event of that memory are dropped from it. ``forget``
appends that event before it rewrites any batch, and every read first reads up to the bucket's
head, so a read never returns a payload of a memory forgotten at or before the head it saw, even
from a batch this process read before another process redacted it.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Callable, Sequence

from msgpack.exceptions import UnpackException

from ..errors import needs_extra

with needs_extra():
    from google.api_core import exceptions as gexc
    from google.cloud import storage
    from google.cloud.storage.retry import DEFAULT_RETRY

from ..errors import (
    ChainBrokenError,
    ConflictError,
    CorruptLogError,
    IdempotencyError,
    InvalidValueError,
    LogNotFoundError,
    StorageError,
)
from ..events import (
    GENESIS_HASH,
    ROW_FIELDS,
    Event,
    EventType,
    NewEvent,
    check_ids,
    decode,
    encode,
    event_from_row,
    event_row,
    from_micros,
    new_id,
    to_micros,
)
from ..scopes import check_id
from .base import (
    Digest,
    EventFilter,
    EventLog,
    backoff,
    check_batch,
    check_import,
    problem_with,
)
from .event_list import EventList

FORMAT = "memswarm-gcs-batch-1"
_CLAIM_ATTEMPTS = 60
_REWRITE_ATTEMPTS = 20
_CLOCK_MAX_AGE_NS = 30_000_000_000  # after this long without a write, ask the store the time

_TEXT, _INT, _BLOB, _NONE = (str,), (int,), (bytes,), (type(None),)
# The types another program's batch row must have, field by field (see ROW_FIELDS).
_ROW_TYPES: tuple[tuple[type, ...], ...] = (
    _INT, _TEXT, _TEXT, _TEXT + _NONE, _TEXT + _NONE, _TEXT + _NONE, _TEXT, _TEXT + _NONE,
    _INT + _NONE, _INT, _INT, _BLOB + _NONE, _BLOB, _BLOB,
)


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
        self._events = EventList()
        self._starts: list[int] = []  # the first position of each batch object
        self._last_generation: int | None = None  # of the last batch object, as read
        self._monotonic_ns: Callable[[], int] = time.monotonic_ns
        self._store_clock: tuple[int, int] | None = None  # (store's µs, monotonic ns) then
        self._identity = self._load_identity(create)

    def _load_identity(self, create: bool) -> str:
        """The log's id from ``identity`` under the prefix; made (create-only, so processes
        that start a log at once agree on one) with a new log, or for a log made before logs
        had one."""
        blob = self._bucket.blob(f"{self.prefix}identity")
        for _ in range(3):
            try:
                return _identity_text(blob.name, blob.download_as_bytes(retry=self._retry))
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

    def adopt_identity(self, log_id: str) -> None:
        check_id(log_id, "log_id")
        with self._lock:
            if self.head() > 0:
                raise ChainBrokenError("only an empty log can take another log's identity")
            blob = self._bucket.blob(f"{self.prefix}identity")
            try:
                blob.reload(retry=self._retry)
                blob.upload_from_string(log_id, if_generation_match=blob.generation,
                                        retry=self._retry)
            except gexc.GoogleAPIError as exc:
                raise StorageError(f"taking the identity {log_id!r} failed: {exc}") from exc
            self._identity = log_id

    # --- names ---------------------------------------------------------------------------------

    def _name(self, first: int) -> str:
        return f"{self.prefix}log/{first:020d}"

    def _first(self, name: str) -> int:
        tail = name[len(self.prefix) + 4:]
        if not (tail.isascii() and tail.isdigit() and len(tail) == 20):
            raise CorruptLogError(f"object {name!r} in the log's prefix is not a batch")
        return int(tail)

    # --- the cache -----------------------------------------------------------------------------

    def _record(self, event: Event) -> None:
        """Take ``event`` into the cache; a forget drops the earlier payloads of its memory."""
        if event.type == EventType.MEMORY_FORGOTTEN and event.memory_id is not None:
            for position in self._events.positions(event.memory_id):
                self._events.blank(position)
        self._events.record(event)

    # --- reading the bucket --------------------------------------------------------------------

    def _refresh(self) -> None:
        """Read the batches after the ones already read (one listing, one GET per batch).

        The listing starts at the last batch read, which must still be there holding the
        events read from it; a log put back from a copy (shorter, or another history) is
        read again from its start."""
        with self._lock:
            last = self._starts[-1] if self._starts else 1
            try:
                blobs = list(self._client.list_blobs(self._bucket, prefix=f"{self.prefix}log/",
                                                     start_offset=self._name(last),
                                                     retry=self._retry))
            except gexc.GoogleAPIError as exc:
                raise StorageError(f"listing the log failed: {exc}") from exc
            if self._starts:
                if not (blobs and blobs[0].name == self._name(last)
                        and self._still_read(blobs[0])):
                    self._events, self._starts, self._last_generation = EventList(), [], None
                    self._refresh()
                    return
                blobs = blobs[1:]
            for blob in blobs:
                first = self._first(blob.name)
                if first != len(self._events) + 1:
                    raise ChainBrokenError(f"batch {blob.name} does not follow position "
                                         f"{len(self._events)}", len(self._events) + 1)
                self._load(blob, first)

    def _load(self, blob: storage.Blob, first: int) -> None:
        try:
            data = blob.download_as_bytes(retry=self._retry)
        except gexc.GoogleAPIError as exc:
            raise StorageError(f"reading {blob.name} failed: {exc}") from exc
        events = _decode_batch(blob.name, data)
        prev = self._events.last_hash()
        for offset, event in enumerate(events):
            problem = problem_with(event, first + offset, prev)
            if problem:
                raise ChainBrokenError(f"position {first + offset}: {problem}", first + offset)
            prev = event.hash
        self._starts.append(first)
        self._last_generation = blob.generation
        for event in events:
            self._record(event)

    def _still_read(self, blob: storage.Blob) -> bool:
        """True if ``blob``, listed as the last batch read, still ends with the event read
        last: the object as it was read, or rewritten by a redaction (which keeps hashes)."""
        if blob.generation == self._last_generation:
            return True
        try:
            events = _decode_batch(blob.name, blob.download_as_bytes(retry=self._retry))
        except gexc.NotFound:
            return False
        except gexc.GoogleAPIError as exc:
            raise StorageError(f"reading {blob.name} failed: {exc}") from exc
        if not events or events[-1].hash != self._events.last_hash():
            return False
        self._last_generation = blob.generation
        return True

    # --- the store's clock ---------------------------------------------------------------------

    def _store_now_us(self) -> int:
        """The store's time now: its stamp on the last object this process wrote, moved on by
        the monotonic clock; after 30 s without a write, one write of ``clock`` asks again."""
        if (self._store_clock is None
                or self._monotonic_ns() - self._store_clock[1] > _CLOCK_MAX_AGE_NS):
            blob = self._bucket.blob(f"{self.prefix}clock")
            started = self._monotonic_ns()
            try:
                blob.upload_from_string(b"", retry=self._retry)
            except gexc.GoogleAPIError as exc:
                raise StorageError(f"asking the store for its time failed: {exc}") from exc
            self._learn_time(blob, started)
            if self._store_clock is None:
                raise StorageError(f"the store gave no time for {blob.name}")
        store_us, at_ns = self._store_clock
        return store_us + (self._monotonic_ns() - at_ns) // 1000

    def _learn_time(self, blob: storage.Blob, started_ns: int) -> None:
        """Keep the store's stamp on ``blob``, just written, against the monotonic clock at the
        middle of the request."""
        if blob.updated is not None:
            middle = (started_ns + self._monotonic_ns()) // 2
            self._store_clock = (to_micros(blob.updated), middle)

    # --- EventLog ------------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], expected_head: int | None = None) -> list[Event]:
        if not events:
            return []
        check_batch(events)
        with self._lock:
            for attempt in range(_CLAIM_ATTEMPTS):
                self._refresh()
                sealed, retried = self._events.prepare(events, expected_head,
                                                       self._store_now_us())
                if retried:
                    return sealed
                head = sealed[0].position - 1
                if self._claim(head + 1, sealed, _encode_batch(sealed)):
                    self._write_hint(head + 1)
                    self._notify()
                    return sealed
                backoff(attempt, cap=0.2)
        raise StorageError(f"could not claim a position after {_CLAIM_ATTEMPTS} attempts")

    def import_events(self, events: Sequence[Event]) -> int:
        """Events to import are held to what this log can read back: ids that
        :func:`check_id` accepts (:class:`InvalidIdError`) and fields of the row's types
        (:class:`InvalidValueError`); nothing is written otherwise. A ``memory.forgotten``
        event among them takes the earlier payloads of its memory along: those in the batch
        are not written, those in earlier batches are redacted."""
        if not events:
            return self.head()
        for event in events:
            _check_ids(event)
        try:
            _decode_batch("the events to import", _encode_batch(events))
        except CorruptLogError as exc:
            raise InvalidValueError(str(exc)) from exc
        with self._lock:
            self._refresh()
            check_import(events, len(self._events), self._events.last_hash())
            clash = [e.event_id for e in events if e.event_id in self._events.by_id]
            if clash:
                raise IdempotencyError(f"event_id {clash[0]!r} is already recorded")
            forgotten = {e.memory_id: e.position for e in events
                         if e.type == EventType.MEMORY_FORGOTTEN and e.memory_id is not None}
            kept = [e._replace(payload=None) if e.payload is not None
                    and forgotten.get(e.memory_id or "", 0) > e.position else e for e in events]
            if not self._claim(kept[0].position, kept, _encode_batch(kept)):
                raise ConflictError(f"position {kept[0].position} was taken while importing")
            self._write_hint(kept[0].position)
            self.redact([p for memory_id in forgotten for p in self._events.positions(memory_id)
                         if p < kept[0].position])
        self._notify()
        return events[-1].position

    def _claim(self, first: int, sealed: list[Event], data: bytes) -> bool:
        """Create the batch object; False if another writer holds the position."""
        blob = self._bucket.blob(self._name(first))
        started = self._monotonic_ns()
        try:
            blob.upload_from_string(data, if_generation_match=0,
                                    content_type="application/x-msgpack", retry=self._retry)
        except gexc.PreconditionFailed:
            return False  # taken (possibly by our own create whose reply was lost)
        except gexc.GoogleAPIError as exc:
            raise StorageError(f"appending failed: {exc}") from exc
        self._learn_time(blob, started)
        self._starts.append(first)
        self._last_generation = blob.generation
        for event in sealed:
            self._record(event)
        return True

    def _write_hint(self, first: int) -> None:
        # Only a hint: readers list from it and fall back to a full listing if it is wrong.
        with contextlib.suppress(gexc.GoogleAPIError):
            self._bucket.blob(f"{self.prefix}head").upload_from_string(str(first))

    def read(self, after: int = 0, limit: int | None = None) -> list[Event]:
        self._refresh()
        with self._lock:
            return self._events.read(after, limit)

    def query(self, where: EventFilter, after: int = 0, limit: int | None = None,
              reverse: bool = False) -> list[Event]:
        self._refresh()
        with self._lock:
            return self._events.query(where, after, limit, reverse)

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
        try:
            data = last.download_as_bytes(retry=self._retry)
        except gexc.GoogleAPIError as exc:
            raise StorageError(f"reading {last.name} failed: {exc}") from exc
        return self._first(last.name) + len(_decode_batch(last.name, data)) - 1

    def _hint(self) -> int | None:
        try:
            return int(self._bucket.blob(f"{self.prefix}head").download_as_text())
        except (gexc.GoogleAPIError, ValueError):
            return None  # only a hint: list everything instead

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
            return self._events.digest()

    # --- redaction -----------------------------------------------------------------------------

    def redact(self, positions: Sequence[int]) -> int:
        """Rewrite the batches holding ``positions`` without those payloads (the one overwrite
        the log allows). Each batch is read afresh from the bucket, whatever this process's
        cache holds, and rewritten on condition that its generation is still the one read;
        when another process rewrote it in between, it is read again and the redactions are
        applied to the new copy. Returns how many of the payloads the bucket held when this
        call looked are gone from it now; raises :class:`StorageError` if a batch could not be
        rewritten."""
        self._refresh()
        removed = 0
        with self._lock:
            wanted = sorted({p for p in positions if 1 <= p <= len(self._events)})
            by_batch: dict[int, list[int]] = {}
            for p in wanted:
                by_batch.setdefault(bisect.bisect_right(self._starts, p) - 1, []).append(p)
            for index, hit in by_batch.items():
                removed += self._redact_batch(index, set(hit))
        return removed

    def _redact_batch(self, index: int, hit: set[int]) -> int:
        """Remove the payloads at ``hit`` (and any this cache has already dropped) from the
        batch ``index``; how many of ``hit`` the bucket held at the first look."""
        first = self._starts[index]
        end = (self._starts[index + 1] if index + 1 < len(self._starts)
               else len(self._events) + 1)
        name = self._name(first)
        held: set[int] | None = None
        for attempt in range(_REWRITE_ATTEMPTS):
            blob = self._bucket.blob(name)
            try:
                data = blob.download_as_bytes(retry=self._retry)
            except gexc.NotFound:
                raise ChainBrokenError(f"batch {name} is gone", first) from None
            except gexc.GoogleAPIError as exc:
                raise StorageError(f"reading {name} failed: {exc}") from exc
            fresh = self._check_copy(name, first, end, _decode_batch(name, data))
            if held is None:
                held = {e.position for e in fresh if e.position in hit and e.payload is not None}
            cached = self._events.events
            rows = [e._replace(payload=None)
                    if e.payload is not None and (e.position in hit
                                                  or cached[e.position - 1].payload is None)
                    else e for e in fresh]
            if rows != fresh:
                if blob.generation is None:
                    raise StorageError(f"the store gave no generation for {name}")
                try:
                    blob.upload_from_string(_encode_batch(rows),
                                            if_generation_match=blob.generation,
                                            content_type="application/x-msgpack",
                                            retry=self._retry)
                except gexc.PreconditionFailed:
                    backoff(attempt, cap=0.2)
                    continue  # another process rewrote it: start again from its copy
                except gexc.GoogleAPIError as exc:
                    raise StorageError(f"redacting {name} failed: {exc}") from exc
            for event in rows:
                if event.payload is None:
                    self._events.blank(event.position)
            return len(held)
        raise StorageError(f"redacting {name} failed: it was rewritten by others "
                           f"{_REWRITE_ATTEMPTS} times; its payloads may remain")

    def _check_copy(self, name: str, first: int, end: int, fresh: list[Event]) -> list[Event]:
        """``fresh``, a new download of the batch read before as positions ``first`` to
        ``end - 1``, if it is that batch (the same chain, payloads only removed); else
        :class:`ChainBrokenError`."""
        cached = self._events.events[first - 1:end - 1]
        prev = self._events.events[first - 2].hash if first > 1 else GENESIS_HASH
        if len(fresh) != len(cached):
            raise ChainBrokenError(f"batch {name} changed its length", first)
        for event, known in zip(fresh, cached, strict=True):
            problem = problem_with(event, known.position, prev)
            if problem or event.hash != known.hash:
                raise ChainBrokenError(f"position {known.position} in {name} changed: "
                                     f"{problem or 'another event'}", known.position)
            prev = event.hash
        return fresh


def _check_ids(event: Event) -> None:
    """Raise :class:`InvalidIdError` unless every id of ``event``, its scope's included, is one
    :func:`check_id` accepts."""
    check_ids(event)
    for name, value in event.scope.parts():
        check_id(value, name)


def _identity_text(name: str, data: bytes) -> str:
    try:
        return check_id(data.decode("utf-8"), "identity")
    except ValueError as exc:
        raise CorruptLogError(f"object {name!r} is not a log identity: {exc}") from exc


def _encode_batch(events: Sequence[Event]) -> bytes:
    return encode([FORMAT, [event_row(e) for e in events]])


def _decode_batch(name: str, data: bytes) -> list[Event]:
    """The events of a batch object; :class:`CorruptLogError` naming ``name`` for anything
    that is not a batch of well-typed rows."""
    try:
        batch = decode(data)
        if not (isinstance(batch, list) and len(batch) == 2 and batch[0] == FORMAT):
            raise ValueError("no batch format tag")
        rows = batch[1]
        if not isinstance(rows, list) or not rows:
            raise ValueError("no rows")
        return [_event(index, row) for index, row in enumerate(rows)]
    except (ValueError, TypeError, OverflowError, UnpackException) as exc:
        raise CorruptLogError(f"object {name!r} is not a MemSwarm batch: {exc}") from exc


def _event(index: int, row: object) -> Event:
    """One row as an :class:`Event`, strictly: ``ValueError`` unless it has the row's shape
    and every field its type (the shared codec would read anything)."""
    if not isinstance(row, list) or len(row) != len(ROW_FIELDS):
        raise ValueError(f"row {index} is not a list of {len(ROW_FIELDS)} fields")
    for field, kinds, value in zip(ROW_FIELDS, _ROW_TYPES, row, strict=True):
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ValueError(f"row {index}: {field} is a {value.__class__.__name__}")
    event = event_from_row(row)
    if (event.memory_id is None) != (event.version is None):
        raise ValueError(f"row {index}: memory_id and version go together")
    from_micros(event.recorded_at_us)  # OverflowError for a time no datetime can hold
    return event
