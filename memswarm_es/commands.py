"""The command path: every change of a memory is decided against its last event and appended,
in one loop (update, delete, forget), with idempotent retries by ``event_id``.

``decide(last)`` looks at the memory's last recorded event (``None`` if it has none) and returns
the event to append, or an already recorded event when there is nothing left to do; it raises
for a memory that cannot take the change. If another writer takes the version in between, the
loop decides again (with jittered backoff) unless the caller named the version it expected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import IdempotencyError, VersionConflictError
from .events import Event, NewEvent
from .log.base import EventFilter, EventLog, backoff

logger = logging.getLogger(__name__)

RETRIES = 50

Decide = Callable[[Event | None], NewEvent | Event]


def append_change(event_log: EventLog, memory_id: str, decide: Decide, *,
                  retry: bool = True) -> Event:
    """Decide and append one change of ``memory_id``; return the event recorded for it."""
    version = 0
    for attempt in range(RETRIES):
        last = event_log.latest(memory_id)
        version = (last.version or 0) if last is not None else 0
        decided = decide(last)
        if isinstance(decided, Event):
            return decided
        try:
            (recorded,) = event_log.append([decided])
            return recorded
        except VersionConflictError:
            if not retry:
                raise
            logger.debug("memory %s moved on; deciding again", memory_id)
            backoff(attempt)
    raise VersionConflictError(memory_id, version, version + 1)


def recorded_retry(event_log: EventLog, memory_id: str, event_id: str, type: str,
                   body: bytes) -> Event | None:
    """The event a retried change already recorded (same ``event_id``), or ``None``; a reused
    ``event_id`` for another change is :class:`IdempotencyError`."""
    history = event_log.query(EventFilter(memory_id=memory_id), reverse=True)
    done = next((e for e in history if e.event_id == event_id), None)
    if done is not None and (done.type != type or not done.holds(body)):
        raise IdempotencyError(f"event_id {event_id!r} was used for another change")
    return done
