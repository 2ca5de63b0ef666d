"""asyncio twins of every facade operation: ``AsyncSharedMemory(memory)``.

Nothing here blocks the event loop. Writes, and whatever reads the log, run in worker threads
(SQLite and SQL drivers are blocking); reads of a read model use its native async client when
it has one (Redis), else a worker thread; waiting for a read model (read-your-writes,
subscriptions) awaits its change signal instead of holding a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from projections.base import ReadModel
from projections.fold import MemoryEntry
from projections.projector import Progress

from .access import Gate
from .agent import AgentMemory
from .audit import AuditPage, MemoryVersion
from .batch import Change, Result
from .errors import MemoryNotFoundError
from .log.base import Digest, Verification
from .memory import SharedMemory
from .scopes import Scope, check_id
from .subscribe import AsyncSubscription, check_after
from .timetravel import PastMemory

#: The options of a read beyond its scope (served in a worker thread).
QUERY_OPTIONS = frozenset({"namespace_prefix", "filter", "order_by", "limit", "offset"})


class AsyncSharedMemory:
    """Awaitable versions of a :class:`SharedMemory`'s operations, same names and arguments.

    Safe under many concurrent tasks (the memory underneath is thread-safe), and usable from
    several event loops.
    """

    def __init__(self, memory: SharedMemory) -> None:
        self.memory = memory

    # --- writing -------------------------------------------------------------------------------

    async def write_scope(self, value: Any, metadata: Mapping[str, Any] | None = None,
                          context_id: str | None = None, **options: Any) -> str:
        return await asyncio.to_thread(self.memory.write_scope, value, metadata, context_id,
                                       **options)

    async def update(self, memory_id: str, *args: Any, **options: Any) -> int:
        return await asyncio.to_thread(self.memory.update, memory_id, *args, **options)

    async def delete(self, memory_id: str, **options: Any) -> int:
        return await asyncio.to_thread(self.memory.delete, memory_id, **options)

    async def set_permissions(self, memory_id: str, *args: Any, **options: Any) -> int:
        return await asyncio.to_thread(self.memory.set_permissions, memory_id, *args, **options)

    async def put(self, namespace: Sequence[str], key: str, value: Any,
                  *args: Any, **options: Any) -> str:
        return await asyncio.to_thread(self.memory.put, namespace, key, value, *args, **options)

    async def apply(self, changes: Sequence[Change], **options: Any) -> list[Result]:
        return await asyncio.to_thread(self.memory.apply, changes, **options)

    async def get_by_key(self, namespace: Sequence[str], key: str) -> MemoryEntry | None:
        return await asyncio.to_thread(self.memory.get_by_key, namespace, key)

    async def namespaces(self, **options: Any) -> list[tuple[str, ...]]:
        return await asyncio.to_thread(self.memory.namespaces, **options)

    # --- groups ----------------------------------------------------------------------------------

    def agent(self, agent_id: str) -> AsyncAgentMemory:
        """The awaitable twin of :meth:`SharedMemory.agent`."""
        return AsyncAgentMemory(self.memory.agent(agent_id))

    async def join_group(self, agent_id: str, group_id: str, admin: bool = False, *,
                         by: str | None = None) -> int:
        return await asyncio.to_thread(self.memory.join_group, agent_id, group_id, admin, by=by)

    async def leave_group(self, agent_id: str, group_id: str, *, by: str | None = None) -> int:
        return await asyncio.to_thread(self.memory.leave_group, agent_id, group_id, by=by)

    async def members(self, group_id: str) -> dict[str, bool]:
        check_id(group_id, "group_id")
        await self._fresh()
        return await self.memory.read_model.members_async(group_id)

    # --- reading -------------------------------------------------------------------------------

    async def read_scope(self, agent_id: str | None = None, group_id: str | None = None,
                         context_id: str | None = None, **unknown: Any) -> list[MemoryEntry]:
        if QUERY_OPTIONS & unknown.keys():
            return await asyncio.to_thread(self.memory.read_scope, agent_id, group_id,
                                           context_id, **unknown)
        scope = Scope.from_query(agent_id, group_id, context_id, unknown)
        await self._fresh()
        return await self.memory.read_model.read_scope_async(scope)

    async def get(self, memory_id: str) -> MemoryEntry:
        return await _get(self.memory, memory_id, None)

    async def history(self, memory_id: str) -> list[MemoryVersion]:
        return await asyncio.to_thread(self.memory.history, memory_id)

    async def search(self, query: str, agent_id: str | None = None,
                     group_id: str | None = None, context_id: str | None = None, k: int = 10,
                     where: Mapping[str, Any] | None = None) -> list[Any]:
        return await asyncio.to_thread(self.memory.search, query, agent_id, group_id,
                                       context_id, k, where)

    # --- audit, time travel, tamper evidence, forgetting ---------------------------------------

    async def audit(self, **filters: Any) -> AuditPage:
        return await asyncio.to_thread(self.memory.audit, **filters)

    async def as_of(self, position: int | None = None, *, time: datetime | None = None,
                    progress: Progress | None = None) -> PastMemory:
        return await asyncio.to_thread(self.memory.as_of, position, time=time, progress=progress)

    async def verify(self, progress: Progress | None = None) -> Verification:
        return await asyncio.to_thread(self.memory.verify, progress)

    async def digest(self) -> Digest:
        return await asyncio.to_thread(self.memory.digest)

    async def extends(self, digest: Digest) -> bool:
        return await asyncio.to_thread(self.memory.extends, digest)

    async def forget(self, memory_id: str, reason: str, *, actor: str | None = None) -> int:
        return await asyncio.to_thread(self.memory.forget, memory_id, reason, actor=actor)

    async def subscribe(self, agent_id: str | None = None, group_id: str | None = None,
                        context_id: str | None = None, *, after: int | None = None,
                        **unknown: Any) -> AsyncSubscription:
        """See :meth:`SharedMemory.subscribe`; iterate the result with ``async for``."""
        scope = Scope.from_query(agent_id, group_id, context_id, unknown)
        return await _subscription(self.memory, scope, after, None)

    # --- freshness -----------------------------------------------------------------------------

    async def _fresh(self) -> None:
        await self.memory.freshness.before_read_async()

    async def wait_for(self, position: int | None = None, timeout: float | None = None) -> int:
        """See :meth:`SharedMemory.wait_for`."""
        return await self.memory.freshness.wait_for_async(position, timeout)

    async def sync(self) -> int:
        return await self.memory.freshness.sync_async()

    async def replace_read_model(self, new: ReadModel) -> ReadModel:
        return await asyncio.to_thread(self.memory.replace_read_model, new)

    async def lag(self) -> int:
        return await asyncio.to_thread(self.memory.lag)

    async def replay(self, progress: Progress | None = None) -> int:
        return await asyncio.to_thread(self.memory.replay, progress)

    # --- lifetime ------------------------------------------------------------------------------

    async def close(self) -> None:
        await self.memory.read_model.aclose()
        await asyncio.to_thread(self.memory.close)

    async def __aenter__(self) -> AsyncSharedMemory:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


async def _get(memory: SharedMemory, memory_id: str, reader: str | None) -> MemoryEntry:
    """One live memory ``reader`` may read (``None``: the operator), read natively."""
    check_id(memory_id, "memory_id")
    await memory.freshness.before_read_async()
    found = await memory.read_model.get_many_async([memory_id], reader)
    if memory_id not in found:
        raise MemoryNotFoundError(memory_id)
    return found[memory_id]


async def _subscription(memory: SharedMemory, scope: Scope, after: int | None,
                        gate: Gate | None) -> AsyncSubscription:
    """A subscription to ``scope`` from the head (or ``after``), checked and anchored (the
    hash of the event it starts after read) off the loop."""
    log = memory.log

    def made() -> AsyncSubscription:
        start = log.head() if after is None else check_after(log, after)
        return AsyncSubscription(log, memory.read_model, scope, start, gate=gate,
                                 refresh=memory.freshness.refresher())

    return await asyncio.to_thread(made)


class AsyncAgentMemory:
    """Awaitable versions of an :class:`AgentMemory`'s operations, same names and arguments:
    ``AsyncSharedMemory(memory).agent("Agent1")``."""

    def __init__(self, agent: AgentMemory) -> None:
        self.agent = agent
        self.agent_id = agent.agent_id

    async def write_scope(self, value: Any, metadata: Mapping[str, Any] | None = None,
                          context_id: str | None = None, **options: Any) -> str:
        return await asyncio.to_thread(self.agent.write_scope, value, metadata, context_id,
                                       **options)

    async def update(self, memory_id: str, *args: Any, **options: Any) -> int:
        return await asyncio.to_thread(self.agent.update, memory_id, *args, **options)

    async def set_permissions(self, memory_id: str, *args: Any, **options: Any) -> int:
        return await asyncio.to_thread(self.agent.set_permissions, memory_id, *args, **options)

    async def delete(self, memory_id: str, **options: Any) -> int:
        return await asyncio.to_thread(self.agent.delete, memory_id, **options)

    async def put(self, namespace: Sequence[str], key: str, value: Any,
                  *args: Any, **options: Any) -> str:
        return await asyncio.to_thread(self.agent.put, namespace, key, value, *args, **options)

    async def apply(self, changes: Sequence[Change]) -> list[Result]:
        return await asyncio.to_thread(self.agent.apply, changes)

    async def get_by_key(self, namespace: Sequence[str], key: str) -> MemoryEntry | None:
        return await asyncio.to_thread(self.agent.get_by_key, namespace, key)

    async def namespaces(self, **options: Any) -> list[tuple[str, ...]]:
        return await asyncio.to_thread(self.agent.namespaces, **options)

    async def forget(self, memory_id: str, reason: str) -> int:
        return await asyncio.to_thread(self.agent.forget, memory_id, reason)

    async def join_group(self, agent_id: str, group_id: str, admin: bool = False) -> int:
        return await asyncio.to_thread(self.agent.join_group, agent_id, group_id, admin)

    async def leave_group(self, agent_id: str, group_id: str) -> int:
        return await asyncio.to_thread(self.agent.leave_group, agent_id, group_id)

    async def groups(self) -> dict[str, bool]:
        return await asyncio.to_thread(self.agent.groups)

    async def members(self, group_id: str) -> dict[str, bool]:
        return await asyncio.to_thread(self.agent.members, group_id)

    async def read_scope(self, agent_id: str | None = None, group_id: str | None = None,
                         context_id: str | None = None, **unknown: Any) -> list[MemoryEntry]:
        if QUERY_OPTIONS & unknown.keys():
            return await asyncio.to_thread(self.agent.read_scope, agent_id, group_id,
                                           context_id, **unknown)
        scope = Scope.from_query(agent_id, group_id, context_id, unknown)
        memory = self.agent.memory
        await memory.freshness.before_read_async()
        return await memory.read_model.read_scope_async(scope, self.agent_id)

    async def get(self, memory_id: str) -> MemoryEntry:
        return await _get(self.agent.memory, memory_id, self.agent_id)

    async def search(self, query: str, *args: Any, **options: Any) -> list[Any]:
        return await asyncio.to_thread(self.agent.search, query, *args, **options)

    async def history(self, memory_id: str) -> list[MemoryVersion]:
        return await asyncio.to_thread(self.agent.history, memory_id)

    async def audit(self, **filters: Any) -> AuditPage:
        return await asyncio.to_thread(self.agent.audit, **filters)

    async def as_of(self, position: int | None = None, *, time: datetime | None = None,
                    progress: Progress | None = None) -> PastMemory:
        return await asyncio.to_thread(self.agent.as_of, position, time=time, progress=progress)

    async def subscribe(self, agent_id: str | None = None, group_id: str | None = None,
                        context_id: str | None = None, *, after: int | None = None,
                        **unknown: Any) -> AsyncSubscription:
        """See :meth:`AgentMemory.subscribe`; iterate the result with ``async for``."""
        scope = Scope.from_query(agent_id, group_id, context_id, unknown)
        memory = self.agent.memory
        gate = Gate(memory.log, memory.read_model, self.agent_id)
        return await _subscription(memory, scope, after, gate)

    async def sync(self) -> int:
        return await self.agent.memory.freshness.sync_async()

    async def wait_for(self, position: int | None = None, timeout: float | None = None) -> int:
        return await self.agent.memory.freshness.wait_for_async(position, timeout)
