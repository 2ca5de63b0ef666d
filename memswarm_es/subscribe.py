"""Subscriptions: the memory versions of one scope, in log order, as a read model applies them.

The read model's checkpoint says how far it has applied the log, and its change signal (commits
in this process at once, Redis pub/sub across processes) says when to look again; the memory
versions themselves are always read from the log, after the last position the subscriber saw.
So a lost wake-up costs only latency (waiters also look now and then), an outage of the read
model's server is waited out, and a subscriber that falls behind, reconnects or restarts with
``after=position`` gets every version exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from projections.base import ReadModel

from .access import Gate
from .audit import MemoryVersion, version_of
from .errors import ChainBrokenError, InvalidInputError, ReadModelUnavailableError
from .events import MEMORY_EVENT_TYPES, Event
from .log.base import EventFilter, EventLog
from .scopes import Scope
from .waiting import wait_until, wait_until_async

DEFAULT_BATCH = 500
_WAKE_EVERY = 1.0  # longest blocking wait, so that close() is noticed
_RETRY_EVERY = 0.2  # while the read model's server is unreachable

logger = logging.getLogger(__name__)


def check_after(log: EventLog, after: object) -> int:
    """``after`` if a subscription can start there: a position of ``log`` (0 to its head).

    Raises :class:`InvalidInputError` for anything else: a position past the head would
    silently skip the versions written up to it.
    """
    if not isinstance(after, int) or isinstance(after, bool):
        raise InvalidInputError(f"after must be a log position (an int), not {after!r}")
    if after < 0:
        raise InvalidInputError(f"after must not be negative (got {after})")
    head = log.head()
    if after > head:
        raise InvalidInputError(f"after={after} is past the log's head ({head}): the versions "
                                "up to it would never be delivered")
    return after


Seen = list[tuple[Event, bool]]  # events read from the log, each with whether it is shown
Read = tuple[Seen, bytes | None]  # a query's events, and the hash of the event at its ceiling
Refresh = Callable[[], object]  # catches a read model up with its log


class _Cursor:
    """Where a subscriber is in the log, and the pure step that moves it on. With an agent's
    ``gate``, only the versions of memories the agent may read when they are delivered are
    shown.

    The cursor keeps the hash of the event at its position: a log put back from a copy that
    holds another event there (or none) is reported (:class:`ChainBrokenError`) at the next
    read, rather than the versions in between being skipped or mixed with another history's."""

    def __init__(self, log: EventLog, model: ReadModel, scope: Scope, after: int,
                 batch_size: int, gate: Gate | None, refresh: Refresh | None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.log = log
        self.model = model
        self.refresh = refresh
        self.scope = scope
        self.position = after
        self.link = self._hash_at(after)  # of the event at the position (none at 0)
        self.batch_size = batch_size
        self.gate = gate
        self.closed = False

    def _hash_at(self, position: int) -> bytes | None:
        found = self.log.read(position - 1, 1) if position > 0 else []
        return found[0].hash if found and found[0].position == position else None

    def query(self, ceiling: int) -> Read:
        """The next events of the scope, each with whether the subscriber may see it, and the
        hash of the event at ``ceiling`` (this reads the log and the read model: blocking).
        Raises :class:`ChainBrokenError` if the log no longer holds the event at the
        position with the hash seen there."""
        if self.position > 0 and self._hash_at(self.position) != self.link:
            raise ChainBrokenError(
                f"the log no longer holds the event this subscription saw at position "
                f"{self.position} (it was put back from a copy): subscribe again after a "
                "position the log holds", self.position)
        events = self.log.query(EventFilter(scope=self.scope), after=self.position,
                                limit=self.batch_size)
        memory_events = [e for e in events if e.type in MEMORY_EVENT_TYPES]
        shown = memory_events if self.gate is None else self.gate.shown(memory_events)
        positions = {e.position for e in shown}
        return [(e, e.position in positions) for e in events], self._hash_at(ceiling)

    def take(self, read: Read, ceiling: int) -> list[MemoryVersion]:
        """Keep the shown events of ``read`` (a query's) up to ``ceiling`` (the checkpoint)
        and move the position past everything seen."""
        seen, at_ceiling = read
        kept = [(e, shown) for e, shown in seen if e.position <= ceiling]
        if len(seen) == self.batch_size and len(kept) == len(seen):  # more to read
            self.position, self.link = kept[-1][0].position, kept[-1][0].hash
        elif ceiling > self.position:
            self.position, self.link = ceiling, at_ceiling
        return [version_of(e) for e, shown in kept if shown]


class Found:
    """What one poll found, and whether the read model's server is out: the state that the
    blocking and the async poll share, so each only says how it reads and waits."""

    def __init__(self) -> None:
        self.versions: list[MemoryVersion] = []
        self.outage = False

    def look(self, cursor: _Cursor, ceiling: int, query: Callable[[], Read]) -> bool:
        """True when the poll is over: versions found (read with ``query`` from the log up to
        the checkpoint ``ceiling``), or the subscription closed."""
        self.outage = False
        if cursor.closed:
            return True
        if ceiling > cursor.position:
            self.versions = cursor.take(query(), ceiling)
        return bool(self.versions)

    def out(self, exc: Exception) -> bool:
        logger.warning("subscription waiting for the read model: %s", exc)
        self.outage = True
        return False


class _Subscriber:
    """``refresh``, where given, catches the read model up with the log (a memory that
    projects inline: nothing else moves its model on), and the subscriber then waits for the
    log to grow rather than for the model."""

    def __init__(self, log: EventLog, model: ReadModel, scope: Scope, after: int,
                 batch_size: int = DEFAULT_BATCH, gate: Gate | None = None,
                 refresh: Refresh | None = None) -> None:
        self._cursor = _Cursor(log, model, scope, after, batch_size, gate, refresh)
        self._buffer: deque[MemoryVersion] = deque()

    @property
    def position(self) -> int:
        """The last log position delivered or skipped (versions still buffered excluded)."""
        return self._buffer[0].position - 1 if self._buffer else self._cursor.position

    @property
    def scope(self) -> Scope:
        return self._cursor.scope

    def close(self) -> None:
        """End the iteration (a waiting iterator returns within a second)."""
        self._cursor.closed = True

    def _drain(self) -> list[MemoryVersion]:
        found = list(self._buffer)
        self._buffer.clear()
        return found


class Subscription(_Subscriber):
    """A blocking iterator of :class:`MemoryVersion` s; ``position`` is the last log position
    it has seen (resume with ``subscribe(..., after=position)``). ``after`` must be a position
    of the log (:func:`check_after`)."""

    def __init__(self, log: EventLog, model: ReadModel, scope: Scope, after: int,
                 batch_size: int = DEFAULT_BATCH, gate: Gate | None = None,
                 refresh: Refresh | None = None) -> None:
        super().__init__(log, model, scope, check_after(log, after), batch_size, gate, refresh)

    def poll(self, timeout: float = 0.0) -> list[MemoryVersion]:
        """The versions applied since the last poll, waiting up to ``timeout`` for one."""
        if self._buffer:
            return self._drain()
        cursor, found = self._cursor, Found()

        def ready() -> bool:
            try:
                if cursor.refresh is not None:
                    cursor.refresh()
                ceiling = cursor.model.checkpoint()
                return found.look(cursor, ceiling, lambda: cursor.query(ceiling))
            except ReadModelUnavailableError as exc:
                return found.out(exc)

        def pause(delay: float) -> None:
            if not found.outage:
                try:
                    if cursor.refresh is not None:
                        cursor.log.wait(cursor.position, delay)
                    else:
                        cursor.model.wait(cursor.position, delay)
                    return
                except ReadModelUnavailableError as exc:
                    found.out(exc)
            time.sleep(min(delay, _RETRY_EVERY))

        wait_until(ready, timeout, pause, longest=_WAKE_EVERY)
        return found.versions

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> MemoryVersion:
        while not self._buffer:
            if self._cursor.closed:
                raise StopIteration
            self._buffer.extend(self.poll(_WAKE_EVERY))
        return self._buffer.popleft()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncSubscription(_Subscriber):
    """The asyncio twin of :class:`Subscription`: ``async for version in subscription``.
    Made by :meth:`AsyncSharedMemory.subscribe`, which checks ``after`` (:func:`check_after`)
    in a worker thread, off the event loop."""

    async def poll(self, timeout: float = 0.0) -> list[MemoryVersion]:
        """See :meth:`Subscription.poll`."""
        if self._buffer:
            return self._drain()
        cursor, found = self._cursor, Found()

        async def ready() -> bool:
            try:
                if cursor.refresh is not None:
                    await asyncio.to_thread(cursor.refresh)
                ceiling = await cursor.model.checkpoint_async()
                if ceiling <= cursor.position or cursor.closed:
                    return found.look(cursor, ceiling, lambda: ([], None))
                read = await asyncio.to_thread(cursor.query, ceiling)
                return found.look(cursor, ceiling, lambda: read)
            except ReadModelUnavailableError as exc:
                return found.out(exc)

        async def pause(delay: float) -> None:
            if not found.outage:
                try:
                    if cursor.refresh is not None:
                        await asyncio.to_thread(cursor.log.wait, cursor.position, delay)
                    else:
                        await cursor.model.wait_async(cursor.position, delay)
                    return
                except ReadModelUnavailableError as exc:
                    found.out(exc)
            await asyncio.sleep(min(delay, _RETRY_EVERY))

        await wait_until_async(ready, timeout, pause, longest=_WAKE_EVERY)
        return found.versions

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> MemoryVersion:
        while not self._buffer:
            if self._cursor.closed:
                raise StopAsyncIteration
            self._buffer.extend(await self.poll(_WAKE_EVERY))
        return self._buffer.popleft()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.close()
