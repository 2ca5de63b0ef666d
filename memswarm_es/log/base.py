"""The :class:`EventLog` interface: what projectors, replay, audit and the facade build on, and
the append rules every store shares (sealing, retries, imports)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import ChainBrokenError, IdempotencyError, VersionConflictError
from ..events import (
    GENESIS_HASH,
    MEMORY_EVENT_TYPES,
    Event,
    EventType,
    NewEvent,
    payload_hash,
    seal,
)
from ..scopes import Scope
from ..telemetry import timed_append
from ..waiting import wait_until


@dataclass(frozen=True, slots=True)
class Digest:
    """The head of a log: its position and the hash of the event there."""

    position: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of walking the hash chain."""

    ok: bool
    checked: int  # events that verified, from position 1
    position: int | None = None  # the first position that does not
    reason: str | None = None


def problem_with(event: Event, expected: int, prev_hash: bytes) -> str | None:
    """What is wrong with ``event`` as the one at ``expected`` after ``prev_hash``, if anything."""
    if event.position != expected:
        return f"event is missing or out of order (found position {event.position})"
    if event.payload is not None and payload_hash(event.payload) != event.payload_hash:
        return "payload does not match its hash"
    try:
        link = event.expected_hash(prev_hash)
    except (TypeError, ValueError, UnicodeError):
        return "header cannot be encoded"
    if link != event.hash:
        return "header or link to the previous event does not match"
    return None


def content_problem(event: Event) -> str | None:
    """What is wrong with a memory event's payload as content, if anything (see
    :meth:`Event.content`); a redacted payload is judged by :meth:`EventLog.check`."""
    if event.type not in MEMORY_EVENT_TYPES:
        return None
    return event.content()[1]


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to read: every part that is set must match (AND)."""

    scope: Scope = field(default_factory=Scope)
    memory_id: str | None = None
    actor: str | None = None
    until_position: int | None = None  # inclusive; times map to positions (see position_at)

    def matches(self, event: Event) -> bool:
        return (
            self.scope.matches(event.scope)
            and (self.memory_id is None or event.memory_id == self.memory_id)
            and (self.actor is None or event.actor == self.actor)
            and (self.until_position is None or event.position <= self.until_position)
        )

    def take(self, candidates: Iterable[Event], limit: int | None) -> list[Event]:
        """The matching events among ``candidates``, in their order, at most ``limit``."""
        found = (e for e in candidates if self.matches(e))
        return list(found if limit is None else itertools.islice(found, limit))


class EventLog(ABC):
    """An append-only, totally ordered log of events with gapless positions from 1.

    Implementations guarantee: a batch append is atomic; positions become visible in order; an
    ``event_id`` already recorded is returned as it was, not appended again; ``(memory_id,
    version)`` is unique, so two writers cannot both make version N of one memory.
    """

    def __init__(self) -> None:
        self._appended = threading.Condition()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if EventLog in cls.__bases__ and "append" in cls.__dict__:  # every store's appends
            cls.append = timed_append(  # type: ignore[method-assign]
                cls.__dict__["append"], cls.__name__)

    # --- writing -------------------------------------------------------------------------------

    @abstractmethod
    def append(self, events: Sequence[NewEvent], expected_head: int | None = None) -> list[Event]:
        """Record ``events`` atomically and return them as recorded.

        Raises :class:`HeadConflictError` if ``expected_head`` is given and is not the head,
        :class:`VersionConflictError` if a ``(memory_id, version)`` is taken, and
        :class:`IdempotencyError` if an ``event_id`` was used for another event or only part of
        the batch is already recorded.
        """

    @abstractmethod
    def import_events(self, events: Sequence[Event]) -> int:
        """Append events already recorded elsewhere (positions, times and hashes as they are),
        for copying a log: they must start right after the head and continue its chain
        (:func:`check_import`). Returns the new head."""

    # --- reading -------------------------------------------------------------------------------

    @abstractmethod
    def identity(self) -> str:
        """A random id made with the log and kept in it (a copy keeps it too): a read model
        records the identity of the log it follows and refuses to follow another."""

    @abstractmethod
    def adopt_identity(self, log_id: str) -> None:
        """Take ``log_id`` as this log's identity (a copy carries its source's); only while
        the log holds no event, else :class:`ChainBrokenError`."""

    @abstractmethod
    def read(self, after: int = 0, limit: int | None = None) -> list[Event]:
        """Events with ``position > after`` in order, at most ``limit`` of them."""

    @abstractmethod
    def query(self, where: EventFilter, after: int = 0, limit: int | None = None,
              reverse: bool = False) -> list[Event]:
        """Events matching ``where`` with ``position > after``, newest first when ``reverse``."""

    @abstractmethod
    def head(self) -> int:
        """Position of the last recorded event (0 when empty)."""

    @abstractmethod
    def digest(self) -> Digest:
        """Head position and hash."""

    @abstractmethod
    def redact(self, positions: Sequence[int]) -> int:
        """Remove the payload bytes of the events at ``positions``, keeping their payload hash,
        so the hash chain still verifies. Returns how many payloads were removed."""

    def change_stamp(self) -> object | None:
        """A value that differs from the one taken before, in the same thread, whenever an
        event was recorded in between (or anything else written to the log's store);
        ``None`` when the log cannot tell cheaply."""
        return None

    def close(self) -> None:
        """Release resources; the default holds none."""

    def stray_position(self) -> int | None:
        """A position below 1 at which the store holds an event (a reader starting after 0
        never sees one: only tampering puts it there), or ``None``; stores whose positions
        cannot fall outside the chain have none."""
        return None

    # --- derived -------------------------------------------------------------------------------

    def iter_events(self, after: int = 0, batch_size: int = 1000,
                    until: int | None = None) -> Iterator[list[Event]]:
        """Batches of events after ``after`` (up to ``until`` inclusive, if given)."""
        while True:
            batch = self.read(after, batch_size)
            if until is not None:
                batch = [e for e in batch if e.position <= until]
            if not batch:
                return
            yield batch
            after = batch[-1].position
            if len(batch) < batch_size or (until is not None and after >= until):
                return

    def latest(self, memory_id: str) -> Event | None:
        """The last event of one memory, or ``None``."""
        found = self.query(EventFilter(memory_id=memory_id), reverse=True, limit=1)
        return found[0] if found else None

    def wait(self, after: int, timeout: float) -> bool:
        """Block until an event after ``after`` exists or ``timeout`` passes; True if one does.

        Appends from this process wake waiters at once; appends from other processes are seen
        by polling with a backoff of at most 50 ms.
        """
        return wait_until(lambda: self.head() > after, timeout, self._pause)

    def _pause(self, delay: float) -> None:
        with self._appended:
            self._appended.wait(delay)

    def position_at(self, time_us: int) -> int:
        """The last position recorded at or before ``time_us`` (0 if none).

        ``recorded_at`` never decreases along positions, so this is a binary search; stores
        with an index on the time answer it in one query.
        """
        lo, hi = 0, self.head()
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.read(mid - 1, 1)[0].recorded_at_us <= time_us:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def check(self, batch_size: int = 5000,
              progress: Callable[[int, int], None] | None = None) -> Verification:
        """Walk the hash chain from the start and report the first event that does not match:
        content against its hash, header against the chain, order, a payload MemSwarm could
        not have recorded, and a payload removed without a later ``memory.forgotten`` event of
        its memory (a redaction is only ever the work of a forget)."""
        head = self.head()
        prev_hash = GENESIS_HASH
        expected = 1
        redacted: dict[str | None, int] = {}  # memory -> first redacted position not yet forgotten
        for batch in self.iter_events(0, batch_size):
            for event in batch:
                problem = problem_with(event, expected, prev_hash) or content_problem(event)
                if problem:
                    return Verification(False, expected - 1, expected, problem)
                if event.type == EventType.MEMORY_FORGOTTEN:
                    redacted.pop(event.memory_id, None)
                if event.payload is None:
                    redacted.setdefault(event.memory_id, event.position)
                prev_hash = event.hash
                expected += 1
            if progress:
                progress(expected - 1, head)
        if expected - 1 < head:
            return Verification(False, expected - 1, expected, "event is missing")
        stray = self.stray_position()
        if stray is not None:  # an event moved outside the chain: the one after the head
            return Verification(False, expected - 1, expected,
                                f"event is missing (an event is stored at position {stray}, "
                                "outside the chain)")
        if redacted:
            position = min(redacted.values())
            return Verification(False, position - 1, position,
                                "payload removed without a forget event")
        return Verification(True, expected - 1)

    def verify(self) -> int:
        """Check the chain; return the head, or raise :class:`ChainBrokenError` naming the
        first bad position."""
        result = self.check()
        if not result.ok:
            raise ChainBrokenError(f"position {result.position}: {result.reason}",
                                   result.position)
        return result.checked

    def extends(self, digest: Digest) -> bool:
        """True if the log still holds, unchanged, the event an earlier ``digest`` named, and
        the chain up to it verifies: the log was only appended to since."""
        if digest.position == 0:
            return self.check().ok
        found = self.read(digest.position - 1, 1)
        return bool(found) and found[0].hash == digest.hash and self.check().ok

    def _notify(self) -> None:
        with self._appended:
            self._appended.notify_all()


def check_import(events: Sequence[Event], head: int, head_hash: bytes) -> None:
    """Refuse ``events`` unless they follow ``head`` without a gap and continue its chain."""
    prev = head_hash
    for position, event in enumerate(events, start=head + 1):
        problem = problem_with(event, position, prev)
        if problem:
            raise ChainBrokenError(f"cannot import position {position}: {problem}", position)
        prev = event.hash


def backoff(attempt: int, base: float = 0.0005, cap: float = 0.05) -> None:
    """Sleep a random while that grows with ``attempt`` (full jitter), so racers spread out."""
    time.sleep(random.uniform(0, min(cap, base * 2 ** attempt)))


def seal_batch(events: Sequence[NewEvent], head: int, head_hash: bytes, head_time_us: int,
               now_us: int) -> list[Event]:
    """Give each new event its position, a time never before its predecessor's, and its hash."""
    recorded_at = max(now_us, head_time_us)
    sealed = []
    for offset, new in enumerate(events, start=1):
        event = seal(new, head + offset, recorded_at, head_hash)
        head_hash = event.hash
        sealed.append(event)
    return sealed


def check_batch(events: Sequence[NewEvent]) -> None:
    """Refuse a batch that names one event_id or one (memory_id, version) twice."""
    if len(events) == 1:
        return
    ids = [e.event_id for e in events]
    if len(set(ids)) != len(ids):
        raise IdempotencyError("a batch names the same event_id twice")
    versions = [(e.memory_id, e.version) for e in events if e.memory_id is not None]
    if len(set(versions)) != len(versions):
        memory_id, version = next(v for v in versions if versions.count(v) > 1)
        assert version is not None
        raise VersionConflictError(memory_id, version - 1, version)


def resolve_retry(events: Sequence[NewEvent], recorded: dict[str, Event]) -> list[Event] | None:
    """Decide what an append does about event_ids that are already recorded.

    Returns the recorded events when the whole batch is a retry, ``None`` when none of it is
    recorded, and raises :class:`IdempotencyError` for a partial or mismatched retry.
    """
    if not recorded:
        return None
    if len(recorded) != len(events):
        raise IdempotencyError(
            f"{len(recorded)} of {len(events)} event_ids in this batch are already recorded")
    for new in events:
        if not new.same_as(recorded[new.event_id]):
            raise IdempotencyError(f"event_id {new.event_id!r} was recorded for another event")
    return [recorded[e.event_id] for e in events]
