"""Forgetting: erase the content of every version of a memory while the hash chain verifies."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from projections.fold import last_permissions

from .commands import append_change
from .errors import InvalidValueError, MemoryNotFoundError
from .events import Event, EventType, NewEvent
from .log.base import EventFilter, EventLog
from .scopes import check_id
from .timetravel import TimeMachine


def forget(event_log: EventLog, time_machine: TimeMachine, memory_id: str, reason: str, *,
           actor: str | None = None,
           allowed: Callable[[Sequence[Event]], None] | None = None) -> int:
    """Forget a memory, live or deleted; return the position of its ``memory.forgotten`` event.

    The event (who and why) is appended first, so that every read model drops the memory when
    it projects it; then the payload bytes of every earlier version are removed from the log
    (their payload hashes stay, so the chain verifies) and the snapshots that may hold them are
    dropped. Calling it again finishes an interrupted forget and appends nothing.

    Raises :class:`RedactionIncompleteError` (the forget is recorded and the read models drop
    the memory) when the log cannot promise that the bytes left its files yet, naming where
    they may remain; the log finishes the redaction at its next open or forget.

    ``allowed``, if given, sees the memory's events and raises to refuse the forget (an agent
    without write permission). The event records the memory's last permissions, which decide
    who may still see its history once the payloads that set them are gone.
    """
    check_id(memory_id, "memory_id")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidValueError("a reason for forgetting is required")
    events: list[Event] = []

    def decide(last: Event | None) -> NewEvent | Event:
        if last is None:
            raise MemoryNotFoundError(memory_id)
        events[:] = event_log.query(EventFilter(memory_id=memory_id))
        if allowed is not None:
            allowed(events)
        if last.type == EventType.MEMORY_FORGOTTEN:
            return last  # forgotten already: finish its redaction below
        readers, writers = last_permissions(events) or ((), ())
        return NewEvent.create(EventType.MEMORY_FORGOTTEN, last.scope,
                               actor or last.scope.agent_id or last.actor,
                               {"reason": reason, "readable_by": list(readers),
                                "writable_by": list(writers)},
                               memory_id=memory_id, version=(last.version or 0) + 1)

    forgotten = append_change(event_log, memory_id, decide)
    try:  # SQL logs also finish every other pending forget here (see log/redaction.py)
        event_log.redact([e.position for e in events if e.type != EventType.MEMORY_FORGOTTEN])
    finally:
        time_machine.forget_from(events[0].position)
    return forgotten.position
