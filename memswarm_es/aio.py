"""asyncio twins of every facade operation: ``AsyncSharedMemory(memory)``.

Nothing here blocks the event loop. Writes, and whatever reads the log, run in worker threads
(SQLite and SQL drivers are blocking); reads of a read model use its native async client when
it has one (Redis), else a worker thread; waiting for a read model (read-your-writes,
subscriptions) awaits its change signal instead of holding a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from projections.base import ReadModel
from projections.fold import MemoryEntry
from projections.projector import Progress

from .audit import AuditPage, MemoryVersion
from .errors import MemoryNotFoundError
from .log.base import Digest, Verification
from .memory import SharedMemory
from .scopes import Scope, check_id
from .subscribe import AsyncSubscription, check_after
from .timetravel import PastMemory


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

    # --- reading -------------------------------------------------------------------------------

    async def read_scope(self, agent_id: str | None = None, group_id: str | None = None,
                         context_id: str | None = None, **unknown: Any) -> list[MemoryEntry]:
        if unknown:
            Scope.from_kwargs(unknown)
        scope = Scope(agent_id, group_id, context_id)
        await self._fresh()
        return await self.memory.read_model.read_scope_async(scope)

    async def get(self, memory_id: str) -> MemoryEntry:
        check_id(memory_id, "memory_id")
        await self._fresh()
        found = await self.memory.read_model.get_many_async([memory_id])
        if memory_id not in found:
            raise MemoryNotFoundError(memory_id)
        return found[memory_id]

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
        if unknown:
            Scope.from_kwargs(unknown)
        scope = Scope(agent_id, group_id, context_id)
        log = self.memory.log
        if after is None:
            start = await asyncio.to_thread(log.head)
        else:
            start = await asyncio.to_thread(check_after, log, after)
        return AsyncSubscription(log, self.memory.read_model, scope, start)

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
