"""An event log held in this process's memory: for tests, demos and ephemeral swarms."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..errors import ChainBrokenError, IdempotencyError
from ..events import Event, NewEvent, new_id
from .base import Digest, EventFilter, EventLog, check_batch, check_import
from .event_list import EventList


class InMemoryEventLog(EventLog):
    """An :class:`EventList` behind a lock."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._events = EventList()
        self._identity = new_id()
        self._redactions = 0  # redactions that blanked a payload

    def identity(self) -> str:
        return self._identity

    def adopt_identity(self, log_id: str) -> None:
        """Take ``log_id`` as this log's identity (a copy carries its source's); only while
        the log holds no event, else :class:`ChainBrokenError`."""
        with self._lock:
            if self._events.events:
                raise ChainBrokenError("only an empty log can take another log's identity")
            self._identity = log_id

    def append(self, events: Sequence[NewEvent], expected_head: int | None = None) -> list[Event]:
        if not events:
            return []
        check_batch(events)
        with self._lock:
            sealed, retried = self._events.prepare(events, expected_head)
            if retried:
                return sealed
            for event in sealed:
                self._events.record(event)
        self._notify()
        return sealed

    def read(self, after: int = 0, limit: int | None = None) -> list[Event]:
        with self._lock:
            return self._events.read(after, limit)

    def query(self, where: EventFilter, after: int = 0, limit: int | None = None,
              reverse: bool = False) -> list[Event]:
        with self._lock:
            return self._events.query(where, after, limit, reverse)

    def import_events(self, events: Sequence[Event]) -> int:
        with self._lock:
            check_import(events, len(self._events), self._events.last_hash())
            for event in events:
                if event.event_id in self._events.by_id:
                    raise IdempotencyError(f"event_id {event.event_id!r} is already recorded")
            for event in events:
                self._events.record(event)
        self._notify()
        return len(self._events)

    def redact(self, positions: Sequence[int]) -> int:
        with self._lock:
            blanked = sum(self._events.blank(p) for p in positions
                          if 1 <= p <= len(self._events))
            self._redactions += blanked > 0
            return blanked

    def change_stamp(self) -> object | None:
        """The head and the redactions so far: nothing but this object writes this log."""
        return len(self._events), self._redactions

    def head(self) -> int:
        return len(self._events)

    def digest(self) -> Digest:
        with self._lock:
            return self._events.digest()


InProcessLog = InMemoryEventLog  # the earlier name
