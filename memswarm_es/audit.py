"""Audit: who wrote what, and when, read from the log through its indexes; the history of one
memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import InvalidInputError, MemoryNotFoundError
from .events import (
    ENDING_EVENT_TYPES,
    MEMORY_EVENT_TYPES,
    Event,
    EventType,
    from_micros,
    to_micros,
)
from .log.base import EventFilter, EventLog
from .scopes import Scope, check_id

MAX_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class MemoryVersion:
    """One version of a memory in its history, with the event that made it."""

    memory_id: str
    version: int
    type: str
    value: Any
    metadata: dict[str, Any] | None
    actor: str
    position: int
    event_id: str
    recorded_at_us: int
    scope: Scope = field(default_factory=Scope)
    redacted: bool = False  # the content of this version was forgotten
    reason: str | None = None  # why, on the forget event itself
    damaged: str | None = None  # why the content cannot be read, if it cannot

    @property
    def recorded_at(self) -> datetime:
        return from_micros(self.recorded_at_us)

    @property
    def deleted(self) -> bool:
        return self.type in ENDING_EVENT_TYPES


def version_of(event: Event) -> MemoryVersion:
    """The memory version that a memory event records (content ``None`` once forgotten)."""
    content, damaged = event.content()
    data = content or {}
    forgotten = event.type == EventType.MEMORY_FORGOTTEN
    return MemoryVersion(
        memory_id=event.memory_id or "", version=event.version or 0, type=event.type,
        value=None if forgotten else data.get("value"),
        metadata=None if forgotten else data.get("metadata"), actor=event.actor,
        position=event.position, event_id=event.event_id, recorded_at_us=event.recorded_at_us,
        redacted=event.payload is None, reason=data.get("reason") if forgotten else None,
        scope=event.scope, damaged=damaged,
    )


def history(event_log: EventLog, memory_id: str) -> list[MemoryVersion]:
    """Every version of one memory, oldest first, deletes and forgetting included."""
    check_id(memory_id, "memory_id")
    versions = [version_of(e) for e in event_log.query(EventFilter(memory_id=memory_id))
                if e.type in MEMORY_EVENT_TYPES]
    if not versions:
        raise MemoryNotFoundError(memory_id)
    return versions


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of matching events; pass ``next_after`` as ``after`` for the next page."""

    events: list[Event]
    next_after: int | None


def audit(event_log: EventLog, *, actor: str | None = None, scope: Scope | None = None,
          since: datetime | None = None, until: datetime | None = None, after: int = 0,
          limit: int = 100) -> AuditPage:
    """The events matching every filter given, in log order, ``limit`` at a time.

    ``since`` is inclusive and ``until`` exclusive. Times become position bounds first (the
    log's time never decreases along positions), so the query runs on the scope, actor or
    position indexes and never scans the log.
    """
    if actor is not None:
        check_id(actor, "actor")
    check_limit(limit)
    if not isinstance(after, int) or after < 0:
        raise InvalidInputError("after must be a non-negative int")
    lower = after
    if since is not None:
        lower = max(lower, event_log.position_at(_micros(since) - 1))
    upper = None if until is None else event_log.position_at(_micros(until) - 1)
    if upper is not None and upper <= lower:
        return AuditPage([], None)
    where = EventFilter(scope or Scope(), actor=actor, until_position=upper)
    found = event_log.query(where, lower, limit)
    return AuditPage(found, found[-1].position if len(found) == limit else None)


def check_limit(limit: object) -> int:
    """``limit`` if it is a page size audit accepts, else :class:`InvalidInputError`."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit must be an int from 1 to {MAX_PAGE}")
    return limit


def _micros(moment: datetime) -> int:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise InvalidInputError("times must be timezone-aware datetimes")
    return to_micros(moment)
