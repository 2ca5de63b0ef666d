"""An event log held in this process's memory: for tests, demos and ephemeral swarms."""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Sequence

from ..errors import IdempotencyError, IntegrityError
from ..events import GENESIS_HASH, Event, NewEvent, new_id
from ..snapshots import InProcessSnapshotStore
from .base import (
    Digest,
    EventFilter,
    EventLog,
    check_batch,
    check_import,
    prepare_append,
)


class InProcessLog(EventLog):
    """A list of events with dictionaries for the lookups the SQL log answers with indexes."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._events: list[Event] = []
        self._by_id: dict[str, Event] = {}
        self._versions: dict[str, int] = {}  # memory_id -> highest recorded version
        self._by_memory: dict[str, list[Event]] = {}
        self._identity = new_id()
        self._snapshots = InProcessSnapshotStore()

    def identity(self) -> str:
        return self._identity

    def snapshot_store(self) -> InProcessSnapshotStore:
        """One store per log, so every memory on this log sees the forgets made through any."""
        return self._snapshots

    def adopt_identity(self, log_id: str) -> None:
        """Take ``log_id`` as this log's identity (a copy carries its source's); only while
        the log holds no event, else :class:`IntegrityError`."""
        with self._lock:
            if self._events:
                raise IntegrityError("only an empty log can take another log's identity")
            self._identity = log_id

    def append(self, events: Sequence[NewEvent], expected_head: int | None = None) -> list[Event]:
        if not events:
            return []
        check_batch(events)
        with self._lock:
            sealed, retried = prepare_append(events, expected_head, self._by_id, self._versions,
                                             self._events)
            if retried:
                return sealed
            for event in sealed:
                self._record(event)
        self._notify()
        return sealed

    def read(self, after: int = 0, limit: int | None = None) -> list[Event]:
        with self._lock:
            end = None if limit is None else max(after, 0) + limit
            return self._events[max(after, 0):end]

    def query(self, where: EventFilter, after: int = 0, limit: int | None = None,
              reverse: bool = False) -> list[Event]:
        with self._lock:
            if where.memory_id is not None:
                source = self._by_memory.get(where.memory_id, [])
            else:
                source = self._events
            start = bisect.bisect_right(source, after, key=lambda e: e.position)
            return where.take(reversed(source[start:]) if reverse else source[start:], limit)

    def import_events(self, events: Sequence[Event]) -> int:
        with self._lock:
            last = self._events[-1] if self._events else None
            check_import(events, len(self._events), last.hash if last else GENESIS_HASH)
            for event in events:
                if event.event_id in self._by_id:
                    raise IdempotencyError(f"event_id {event.event_id!r} is already recorded")
            for event in events:
                self._record(event)
        self._notify()
        return len(self._events)

    def _record(self, event: Event) -> None:
        self._events.append(event)
        self._by_id[event.event_id] = event
        if event.memory_id is not None and event.version is not None:
            self._versions[event.memory_id] = event.version
            self._by_memory.setdefault(event.memory_id, []).append(event)

    def redact(self, positions: Sequence[int]) -> int:
        removed = 0
        with self._lock:
            for position in positions:
                if not 1 <= position <= len(self._events):
                    continue
                event = self._events[position - 1]
                if event.payload is None:
                    continue
                blank = dataclasses.replace(event, payload=None)
                self._events[position - 1] = blank
                self._by_id[event.event_id] = blank
                if event.memory_id is not None:
                    history = self._by_memory[event.memory_id]
                    history[history.index(event)] = blank
                removed += 1
        return removed

    def head(self) -> int:
        return len(self._events)

    def digest(self) -> Digest:
        with self._lock:
            if not self._events:
                return Digest(0, GENESIS_HASH)
            return Digest(len(self._events), self._events[-1].hash)
