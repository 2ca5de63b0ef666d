"""An agent acting as itself: ``swarm.agent("Agent1")``.

Every event written through a handle records the agent as its actor, and every answer holds only
what the agent may see: the memories whose latest ``readable_by`` names it, ``*`` or a group it
belongs to now, in live reads, search, history, audit, time travel and subscriptions. A memory
it may not read does not exist for it (:class:`MemoryNotFoundError`); a change it may not make
raises :class:`PermissionDeniedError` and writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from projections.base import SearchHit
from projections.fold import MemoryEntry
from projections.keys import NamespaceQuery, Query
from projections.projector import Progress

from .audit import AuditPage, MemoryVersion
from .batch import UNSET, Change, Put, Result, apply_changes
from .errors import InvalidIdError, PermissionDeniedError
from .events import EventType
from .principals import OPERATOR
from .scopes import Scope, check_id
from .timetravel import PastMemory

if TYPE_CHECKING:
    from .memory import SharedMemory
    from .subscribe import Subscription

#: The namespace of the event ids an agent's own retry keys become (see :func:`own_event_id`).
_EVENT_IDS = uuid.UUID("6f1d2b0e-5c0a-4d43-9a8e-1b7c1e0f4a21")


def own_event_id(agent_id: str, event_id: str | None) -> str | None:
    """The event id that agent ``agent_id``'s retry key ``event_id`` is recorded under: derived
    from the agent and the key, so that no agent's key can meet another's (nor tell it whether
    some other event exists). A retry with the same key finds the same event."""
    if event_id is None:
        return None
    check_id(event_id, "event_id")
    return str(uuid.uuid5(_EVENT_IDS, f"{agent_id}\x00{event_id}"))

class AgentMemory:
    """``memory`` as seen and changed by agent ``agent_id``; made by
    :meth:`SharedMemory.agent`. The same operations, without ``actor=``: the actor is the
    agent."""

    def __init__(self, memory: SharedMemory, agent_id: str) -> None:
        if check_id(agent_id, "agent_id") == OPERATOR:
            raise InvalidIdError(f"{OPERATOR!r} names the unbound memory, not an agent")
        self.memory = memory
        self.agent_id = agent_id

    def __repr__(self) -> str:
        return f"AgentMemory({self.agent_id!r})"

    def _key(self, event_id: str | None) -> str | None:
        return own_event_id(self.agent_id, event_id)

    # --- writing -------------------------------------------------------------------------------

    def write_scope(self, value: Any, metadata: Mapping[str, Any] | None = None,
                    context_id: str | None = None, *, event_id: str | None = None,
                    embedding: Sequence[float] | None = None,
                    readable_by: Iterable[str] | None = None,
                    writable_by: Iterable[str] | None = None, key: str | None = None,
                    namespace: Sequence[str] | None = None) -> str:
        """Write a memory of this agent (``metadata["agent_id"]``, if given, must be this
        agent; a ``group_id`` needs membership of that group); return its id (with
        ``event_id``, the id :func:`own_event_id` derives from it: the same for every retry).
        With a ``key`` a live memory holds, an update of it (see :meth:`put`)."""
        return self.memory._write(self.agent_id, self.agent_id, value, metadata, context_id,
                                  self._key(event_id), embedding, readable_by, writable_by,
                                  key, namespace)

    def put(self, namespace: Sequence[str], key: str, value: Any,
            metadata: Mapping[str, Any] | None = None, *,
            embedding: Sequence[float] | None = None,
            readable_by: Iterable[str] | None = None,
            writable_by: Iterable[str] | None = None) -> str:
        """See :meth:`SharedMemory.put`. A key held by a memory this agent may not change
        raises :class:`PermissionDeniedError` naming only the namespace and key: all a key
        tells of a memory the agent may not read is that it is taken."""
        (held,) = self.apply([Put(namespace, key, value, metadata, embedding, readable_by,
                                  writable_by)])
        assert isinstance(held, str)
        return held

    def apply(self, changes: Sequence[Change]) -> list[Result]:
        """See :meth:`SharedMemory.apply`; every change is checked as this agent's."""
        return apply_changes(self.memory, self.agent_id, self.agent_id, changes)

    def update(self, memory_id: str, value: Any = UNSET,
               metadata: Mapping[str, Any] | None = None, *, expected_version: int | None = None,
               event_id: str | None = None, embedding: Sequence[float] | None = None,
               readable_by: Iterable[str] | None = None,
               writable_by: Iterable[str] | None = None) -> int:
        """See :meth:`SharedMemory.update`; needs write permission."""
        return self.memory._update(self.agent_id, self.agent_id, memory_id, value, metadata,
                                   expected_version, self._key(event_id), embedding, readable_by,
                                   writable_by)

    def set_permissions(self, memory_id: str, readable_by: Iterable[str] | None = None,
                        writable_by: Iterable[str] | None = None, *,
                        expected_version: int | None = None,
                        event_id: str | None = None) -> int:
        """See :meth:`SharedMemory.set_permissions`; needs write permission."""
        return self.memory._set_permissions(self.agent_id, self.agent_id, memory_id, readable_by,
                                            writable_by, expected_version, self._key(event_id))

    def delete(self, memory_id: str, *, expected_version: int | None = None,
               event_id: str | None = None) -> int:
        """See :meth:`SharedMemory.delete`; needs write permission."""
        return self.memory._change(self.agent_id, self.agent_id, EventType.MEMORY_DELETED,
                                   memory_id, {}, expected_version, self._key(event_id))

    def forget(self, memory_id: str, reason: str) -> int:
        """See :meth:`SharedMemory.forget`; needs write permission."""
        return self.memory._forget(self.agent_id, self.agent_id, memory_id, reason)

    # --- groups ----------------------------------------------------------------------------------

    def join_group(self, agent_id: str, group_id: str, admin: bool = False) -> int:
        """Add ``agent_id`` to ``group_id`` (or change its admin flag); this agent must be an
        admin of the group."""
        return self.memory.join_group(agent_id, group_id, admin, by=self.agent_id)

    def leave_group(self, agent_id: str, group_id: str) -> int:
        """Take ``agent_id`` out of ``group_id``: this agent itself, or any member if this
        agent is an admin of the group."""
        return self.memory.leave_group(agent_id, group_id, by=self.agent_id)

    def groups(self) -> dict[str, bool]:
        """The groups this agent belongs to now, each with whether it is an admin there."""
        gate = self.memory._gate(self.agent_id)
        assert gate is not None
        return gate.groups()

    def members(self, group_id: str) -> dict[str, bool]:
        """The members of a group this agent belongs to (each with whether it is an admin)."""
        check_id(group_id, "group_id")
        if group_id not in self.groups():
            raise PermissionDeniedError(self.agent_id, "see the members of",
                                        f"group {group_id!r}")
        return self.memory.read_model.members(group_id)

    # --- reading -------------------------------------------------------------------------------

    def read_scope(self, agent_id: str | None = None, group_id: str | None = None,
                   context_id: str | None = None, *, namespace_prefix: Sequence[str] | None = None,
                   filter: Mapping[str, Any] | None = None, order_by: str | None = None,
                   limit: int | None = None, offset: int = 0,
                   **unknown: Any) -> list[MemoryEntry]:
        """The live memories inside every scope given (AND) that this agent may read (the
        options as in :meth:`SharedMemory.read_scope`)."""
        query = Query.checked(namespace_prefix, filter, order_by, limit, offset)
        return self.memory._read_scope(
            self.agent_id, Scope.from_query(agent_id, group_id, context_id, unknown), query)

    def get_by_key(self, namespace: Sequence[str], key: str) -> MemoryEntry | None:
        """The live memory holding ``key`` in ``namespace``, if this agent may read it."""
        return self.memory._get_by_key(self.agent_id, namespace, key)

    def namespaces(self, prefix: Sequence[str] | None = None,
                   suffix: Sequence[str] | None = None, max_depth: int | None = None,
                   limit: int = 100, offset: int = 0) -> list[tuple[str, ...]]:
        """The namespaces holding memories this agent may read (see
        :meth:`SharedMemory.namespaces`)."""
        return self.memory._namespaces(
            self.agent_id, NamespaceQuery.checked(prefix, suffix, max_depth, limit, offset))

    def get(self, memory_id: str) -> MemoryEntry:
        """One live memory this agent may read, or :class:`MemoryNotFoundError`."""
        return self.memory._get(self.agent_id, memory_id)

    def search(self, query: str, agent_id: str | None = None, group_id: str | None = None,
               context_id: str | None = None, k: int = 10,
               where: Mapping[str, Any] | None = None) -> list[SearchHit]:
        """The ``k`` memories this agent may read closest to ``query`` (see
        :meth:`SharedMemory.search`)."""
        return self.memory._search(self.agent_id, query, Scope(agent_id, group_id, context_id),
                                   k, where)

    def history(self, memory_id: str) -> list[MemoryVersion]:
        """Every version of a memory this agent may read now (its latest permissions decide)."""
        return self.memory._history(self.agent_id, memory_id)

    def audit(self, *, actor: str | None = None, agent_id: str | None = None,
              group_id: str | None = None, context_id: str | None = None,
              since: datetime | None = None, until: datetime | None = None, after: int = 0,
              limit: int = 100) -> AuditPage:
        """The events this agent may see that match every filter given: those of memories it
        may read, and the membership events of its groups and of itself."""
        return self.memory._audit(self.agent_id, actor=actor, agent_id=agent_id,
                                  group_id=group_id, context_id=context_id, since=since,
                                  until=until, after=after, limit=limit)

    def as_of(self, position: int | None = None, *, time: datetime | None = None,
              progress: Progress | None = None) -> PastMemory:
        """The memory as it stood at ``position`` or ``time``, holding only what this agent may
        read now."""
        gate = self.memory._gate(self.agent_id)
        assert gate is not None
        return self.memory.as_of(position, time=time, progress=progress).seen_by(gate)

    def subscribe(self, agent_id: str | None = None, group_id: str | None = None,
                  context_id: str | None = None, *, after: int | None = None,
                  **unknown: Any) -> Subscription:
        """The versions of the memories this agent may read (when delivered) inside a scope,
        as they are applied (see :meth:`SharedMemory.subscribe`)."""
        return self.memory._subscribe(
            self.agent_id, Scope.from_query(agent_id, group_id, context_id, unknown), after)

    # --- freshness -------------------------------------------------------------------------------

    def sync(self) -> int:
        return self.memory.sync()

    def wait_for(self, position: int | None = None, timeout: float | None = None) -> int:
        return self.memory.wait_for(position, timeout)
