"""The events of a log held in this process's memory, with the lookups the SQL log answers with
indexes: by event id, each memory's last version, each memory's positions. The in-process log
keeps its events here, and the GCS log the events it has read."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from ..errors import HeadConflictError, VersionConflictError
from ..events import GENESIS_HASH, Event, NewEvent, now_micros
from .base import Digest, EventFilter, resolve_retry, seal_batch


class EventList:
    """Events at positions 1, 2, ... in order. Not locked: its log holds its own lock around
    every call."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.by_id: dict[str, Event] = {}
        self.versions: dict[str, int] = {}  # memory_id -> highest recorded version
        self._positions: dict[str, list[int]] = {}  # memory_id -> its positions, in order

    def __len__(self) -> int:
        return len(self.events)

    def last_hash(self) -> bytes:
        return self.events[-1].hash if self.events else GENESIS_HASH

    def positions(self, memory_id: str) -> Sequence[int]:
        """The positions of the events of ``memory_id``, in order."""
        return self._positions.get(memory_id, ())

    def record(self, event: Event) -> None:
        """Take ``event``, the one at the next position."""
        self.events.append(event)
        self.by_id[event.event_id] = event
        if event.memory_id is not None and event.version is not None:
            self.versions[event.memory_id] = event.version
            self._positions.setdefault(event.memory_id, []).append(event.position)

    def blank(self, position: int) -> bool:
        """Drop the payload at ``position``; True if there was one."""
        event = self.events[position - 1]
        if event.payload is None:
            return False
        self.events[position - 1] = blank = event._replace(payload=None)
        self.by_id[event.event_id] = blank
        return True

    def prepare(self, events: Sequence[NewEvent], expected_head: int | None,
                now_us: int | None = None) -> tuple[list[Event], bool]:
        """The recorded events of a retry, with ``True``; or the batch sealed after the last
        event at ``now_us`` (this machine's clock if not given), with ``False``. Raises the
        conflicts that the SQL log's constraints raise."""
        retry = resolve_retry(events, {e.event_id: self.by_id[e.event_id] for e in events
                                       if e.event_id in self.by_id})
        if retry is not None:
            return retry, True
        head = len(self.events)
        if expected_head is not None and expected_head != head:
            raise HeadConflictError(expected_head, head)
        for new in events:
            if new.memory_id is not None and new.version is not None:
                current = self.versions.get(new.memory_id, 0)
                if new.version <= current:
                    raise VersionConflictError(new.memory_id, new.version - 1, current)
        last = self.events[-1] if self.events else None
        return seal_batch(events, head, self.last_hash(), last.recorded_at_us if last else 0,
                          now_micros() if now_us is None else now_us), False

    # --- EventLog's reads ------------------------------------------------------------------------

    def read(self, after: int = 0, limit: int | None = None) -> list[Event]:
        end = None if limit is None else max(after, 0) + limit
        return self.events[max(after, 0):end]

    def query(self, where: EventFilter, after: int = 0, limit: int | None = None,
              reverse: bool = False) -> list[Event]:
        if where.memory_id is not None:
            mine = self.positions(where.memory_id)
            source = [self.events[p - 1] for p in mine[bisect.bisect_right(mine, after):]]
        else:
            source = self.events[max(after, 0):]
        return where.take(reversed(source) if reverse else source, limit)

    def digest(self) -> Digest:
        return Digest(len(self.events), self.last_hash())
