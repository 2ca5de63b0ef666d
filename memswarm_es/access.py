"""What one agent may see and change, decided on every path the same way.

The rules (the README has them as a table): a memory is readable by the principals in its
latest version's ``readable_by`` and changeable by those in its ``writable_by``; ``group:<g>``
means the members of ``g`` *now*. So an agent that leaves a group loses at once every memory it
read through that group, in live reads, in time travel, in history, audit and subscriptions.

A :class:`Gate` answers for one agent: its principals come from the read model's memberships;
the latest permissions of a live memory come from the read model, those of a deleted or
forgotten one from its events in the log (the forget event records the last ones, since it
erases the payloads before it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from projections.base import ReadModel
from projections.fold import last_permissions

from .audit import AuditPage, check_limit
from .errors import MemoryNotFoundError, PermissionDeniedError
from .events import MEMBERSHIP_EVENT_TYPES, Event
from .log.base import EventFilter, EventLog
from .principals import allows, principals_of

#: Fewest events an agent's audit reads from the log at a time (most may be hidden from it).
SCAN_PAGE = 1000


class Gate:
    """The access decisions of agent ``agent_id`` over ``log`` and its read ``model``."""

    def __init__(self, log: EventLog, model: ReadModel, agent_id: str) -> None:
        self.log = log
        self.model = model
        self.agent_id = agent_id

    def groups(self) -> dict[str, bool]:
        """The groups the agent belongs to now (admin or not)."""
        return self.model.groups_of(self.agent_id)

    def principals(self) -> frozenset[str]:
        return principals_of(self.agent_id, self.groups())

    def readable(self, memory_ids: Iterable[str]) -> set[str]:
        """The memories among ``memory_ids`` (live or ended) that the agent may read now."""
        ids = set(memory_ids)
        if not ids:
            return set()
        principals = self.principals()
        live = self.model.get_many(ids)
        found = {m for m, e in live.items() if allows(e.readable_by, principals)}
        for memory_id in ids - live.keys():
            permissions = last_permissions(self.log.query(EventFilter(memory_id=memory_id)))
            if permissions is not None and allows(permissions[0], principals):
                found.add(memory_id)
        return found

    def shown(self, events: Sequence[Event]) -> list[Event]:
        """The events of ``events`` the agent may see: those of memories it may read, and the
        membership events of its groups and of itself."""
        readable = self.readable({e.memory_id for e in events if e.memory_id is not None})
        groups = self.groups()
        return [e for e in events if (
            e.memory_id in readable if e.memory_id is not None
            else e.type in MEMBERSHIP_EVENT_TYPES
            and (e.scope.group_id in groups or e.scope.agent_id == self.agent_id))]

    def check_change(self, memory_id: str, events: Sequence[Event], what: str) -> None:
        """Raise unless the agent may change the memory whose events are ``events``: as if it
        did not exist (:class:`MemoryNotFoundError`) when it may not even read it,
        :class:`PermissionDeniedError` when it may read but not change it."""
        permissions = last_permissions(events)
        principals = self.principals()
        if permissions is None or not allows(permissions[0], principals):
            raise MemoryNotFoundError(memory_id)
        if not allows(permissions[1], principals):
            raise PermissionDeniedError(self.agent_id, what, f"memory {memory_id!r}")


def audit_seen_by(gate: Gate, audit: Callable[..., AuditPage], *, limit: int = 100,
                  after: int = 0, **filters: Any) -> AuditPage:
    """A page of ``audit`` (with ``filters``) holding only the events ``gate``'s agent may see:
    pages of the log (of at least :data:`SCAN_PAGE` events, however small ``limit``) are read
    until ``limit`` such events are found or the log ends."""
    found: list[Event] = []
    scan = max(check_limit(limit), SCAN_PAGE)
    while True:
        page = audit(limit=scan, after=after, **filters)
        for event in gate.shown(page.events):
            found.append(event)
            if len(found) == limit:
                more = page.next_after is not None or event is not page.events[-1]
                return AuditPage(found, event.position if more else None)
        if page.next_after is None:
            return AuditPage(found, None)
        after = page.next_after
