"""How a memory's reads see its writes: the read model caught up inline, or waited for while a
runner projects it elsewhere. One policy object per memory, with blocking and async twins, so
the facade never asks which kind it has.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from projections.base import ReadModel
from projections.projector import Projector

from .errors import ReadModelBehindError
from .events import Event
from .log.base import EventLog
from .waiting import wait_until


class View:
    """The read model a memory reads from and the projector that fills it, swapped together
    (``replace``) under one lock that inline projection holds too."""

    def __init__(self, event_log: EventLog, read_model: ReadModel, batch_size: int) -> None:
        self.log = event_log
        self.read_model = read_model
        self.projector = Projector(event_log, read_model, batch_size)
        self.lock = threading.RLock()
        self._setup: Callable[[], None] | None = None

    def defer(self, setup: Callable[[], None]) -> None:
        """Run ``setup`` once, before the first catch-up or wait (a SQL view the log keeps from
        the memory's first use: a memory composed into another, never used, sets up nothing)."""
        self._setup = setup

    def ready(self) -> None:
        """Run the deferred set-up, if it has not run."""
        if self._setup is not None:
            with self.lock:
                if self._setup is not None:
                    self._setup()
                    self._setup = None

    def replace(self, new: ReadModel) -> ReadModel:
        """Catch ``new`` up with the log, then switch to it atomically; return the old one."""
        with self.lock:
            projector = Projector(self.log, new, self.projector.batch_size)
            projector.catch_up()
            old, self.read_model, self.projector = self.read_model, new, projector
            self._setup = None  # it was for the old one
        return old

    def catch_up(self, until: int | None = None, recorded: Sequence[Event] = ()) -> int:
        with self.lock:
            self.ready()
            return self.projector.catch_up(until=until, recorded=recorded)


class Freshness(ABC):
    """What a memory does after a write and before a read, so that it reads its own writes."""

    def __init__(self, view: View, wait_timeout: float) -> None:
        if wait_timeout < 0:
            raise ValueError("wait_timeout must not be negative")
        self.view = view
        self.wait_timeout = wait_timeout
        self.last_position = 0  # of this memory's last write
        self._lock = threading.Lock()

    def wrote(self, position: int, recorded: Sequence[Event] = ()) -> None:
        """A write of this memory was recorded at ``position`` (its events: ``recorded``)."""
        with self._lock:
            self.last_position = max(self.last_position, position)
        self._after_write(position, recorded)

    def _after_write(self, position: int, recorded: Sequence[Event]) -> None:
        """What a write does once recorded (nothing, unless projecting inline)."""

    def refresher(self) -> Callable[[], object] | None:
        """What a subscriber calls to bring the read model up to the log before looking at
        it, where nothing else moves it on (``None``: a runner does)."""
        return None

    @abstractmethod
    def wait_for(self, position: int | None = None, timeout: float | None = None) -> int:
        """Block until the read model has applied ``position`` (default: this memory's last
        write); return its checkpoint, or raise :class:`ReadModelBehindError` after
        ``timeout`` seconds (default ``wait_timeout``)."""

    @abstractmethod
    async def wait_for_async(self, position: int | None = None,
                             timeout: float | None = None) -> int:
        """:meth:`wait_for` without blocking the event loop."""

    def before_read(self) -> None:
        """What a read does first."""
        self.wait_for()

    async def before_read_async(self) -> None:
        await self.wait_for_async()

    def sync(self) -> int:
        """Bring the read model up to the log's head; return its checkpoint."""
        return self.wait_for(self.view.log.head())

    async def sync_async(self) -> int:
        return await self.wait_for_async(await asyncio.to_thread(self.view.log.head))

    def _limits(self, position: int | None, timeout: float | None) -> tuple[int, float]:
        return (self.last_position if position is None else position,
                self.wait_timeout if timeout is None else timeout)


class InlineProjection(Freshness):
    """The memory projects the log itself: after every write, and before every read (which so
    also sees other processes' writes)."""

    def _after_write(self, position: int, recorded: Sequence[Event]) -> None:
        self.view.catch_up(until=position, recorded=recorded)

    def refresher(self) -> Callable[[], object]:
        return self.view.catch_up

    def before_read(self) -> None:
        self.view.catch_up()

    async def before_read_async(self) -> None:
        await asyncio.to_thread(self.view.catch_up)

    def sync(self) -> int:
        return self.view.catch_up()

    def wait_for(self, position: int | None = None, timeout: float | None = None) -> int:
        target, limit = self._limits(position, timeout)
        reached = [0]

        def ready() -> bool:
            reached[0] = self.view.catch_up(until=target)
            return reached[0] >= target

        # Not in the log yet (another process's write): wait for the log to grow.
        if not wait_until(ready, limit, lambda delay: self.view.log.wait(reached[0], delay)):
            raise ReadModelBehindError(target, reached[0], limit)
        return reached[0]

    async def wait_for_async(self, position: int | None = None,
                             timeout: float | None = None) -> int:
        return await asyncio.to_thread(self.wait_for, position, timeout)


class ReadProjection(InlineProjection):
    """The memory projects the log itself, before every read only: the writes since the last
    read are folded at once, in one transaction (a SQL view that appends do not keep)."""

    def _after_write(self, position: int, recorded: Sequence[Event]) -> None:
        """Nothing: the next read (or subscriber) folds it."""


class RunnerProjection(Freshness):
    """A runner projects the log elsewhere (``memswarm project``); reads wait until the read
    model has reached this memory's last write."""

    def wait_for(self, position: int | None = None, timeout: float | None = None) -> int:
        target, limit = self._limits(position, timeout)
        self.view.ready()
        model = self.view.read_model
        if not model.wait(target - 1, limit):
            raise ReadModelBehindError(target, model.checkpoint(), limit)
        return model.checkpoint()

    async def wait_for_async(self, position: int | None = None,
                             timeout: float | None = None) -> int:
        target, limit = self._limits(position, timeout)
        await asyncio.to_thread(self.view.ready)
        model = self.view.read_model
        if not await model.wait_async(target - 1, limit):
            raise ReadModelBehindError(target, await model.checkpoint_async(), limit)
        return await model.checkpoint_async()
