"""Audit: who wrote what, and when, read from the log through its indexes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .errors import InvalidInputError
from .events import Event, to_micros
from .log.base import EventFilter, EventLog
from .scopes import Scope, check_id

MAX_PAGE = 10_000


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
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit must be an int from 1 to {MAX_PAGE}")
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


def _micros(moment: datetime) -> int:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise InvalidInputError("times must be timezone-aware datetimes")
    return to_micros(moment)
