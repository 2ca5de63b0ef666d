"""A change counter that threads and asyncio tasks can wait on.

A read model bumps it after each commit it makes (and, for Redis, on each pub/sub message from
other processes); waiters remember the count they saw before checking the checkpoint, so a
change between the check and the wait is never missed.
"""

from __future__ import annotations

import asyncio
import threading


class Signal:
    """Counts changes; :meth:`wait` and :meth:`wait_async` return once the count moves on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def count(self) -> int:
        return self._count

    def notify(self) -> None:
        """Record a change and wake every waiter, in any thread or event loop."""
        with self._cond:
            self._count += 1
            self._cond.notify_all()
            futures, self._futures = self._futures, []
        for loop, future in futures:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    def wait(self, seen: int, timeout: float) -> bool:
        """Block until the count differs from ``seen`` or ``timeout`` passes; True if it did."""
        with self._cond:
            return self._cond.wait_for(lambda: self._count != seen, timeout)

    async def wait_async(self, seen: int, timeout: float) -> bool:
        """Like :meth:`wait`, without blocking the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._cond:
            if self._count != seen:
                return True
            self._futures.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._cond:
                if entry in self._futures:
                    self._futures.remove(entry)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
