"""Waiting for something to become true: the one backoff loop, blocking and async.

Everything that waits in MemSwarm (a log for an append, a read model for a checkpoint, a
subscription for a version, the facade for read-your-writes) looks, then pauses for a delay
that doubles from ``first`` up to ``longest``, until the thing is true or ``timeout`` passes.
A pause may end early (woken by a signal): it only bounds how long a look can be late.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

FIRST_PAUSE = 0.002
LONGEST_PAUSE = 0.05


def wait_until(ready: Callable[[], bool], timeout: float, pause: Callable[[float], object],
               *, first: float = FIRST_PAUSE, longest: float = LONGEST_PAUSE) -> bool:
    """Call ``ready()`` until it is true (then return True) or ``timeout`` seconds pass (then
    False); between looks, ``pause(delay)``."""
    deadline = time.monotonic() + timeout
    delay = first
    while True:
        if ready():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        pause(min(delay, left))
        delay = min(delay * 2, longest)


async def wait_until_async(ready: Callable[[], Awaitable[bool]], timeout: float,
                           pause: Callable[[float], Awaitable[object]], *,
                           first: float = FIRST_PAUSE, longest: float = LONGEST_PAUSE) -> bool:
    """:func:`wait_until` for a running event loop: ``ready`` and ``pause`` are awaited."""
    deadline = time.monotonic() + timeout
    delay = first
    while True:
        if await ready():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await pause(min(delay, left))
        delay = min(delay * 2, longest)
