"""The tools a model calls. None takes an agent or an actor: each call acts as the agent of
its connection (:func:`.identity.agent_of`) through ``memory.agent(agent_id)``, so the log
records who really wrote and every answer holds only what that agent may see.

An error the model can act on (a :class:`~memswarm_es.errors.MemSwarmError`: not found, not
allowed, a version conflict, a value refused) is the tool's error result with its text;
anything else is the SDK's opaque "Error executing tool".
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from projections.base import SearchableReadModel

from ...agent import AgentMemory
from ...errors import InvalidInputError, MemSwarmError, VersionConflictError
from ...memory import SharedMemory
from . import shapes
from .identity import agent_of

MAX_LIMIT = 1000
Answer = dict[str, Any]
_Tool = TypeVar("_Tool", bound=Callable[..., Awaitable[Answer]])

READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)
ADDS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                       open_world_hint=False)
CHANGES = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                          open_world_hint=False)
ENDS = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                       open_world_hint=False)


def explain(exc: MemSwarmError) -> str:
    """The text of an error for the model, with what it can do about it."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, VersionConflictError):
        text += (f". Someone changed it since you read it: read it again with get_memory, "
                 f"then retry with expected_version={exc.actual} if your change still holds.")
    return text


def _answers(tool: _Tool) -> _Tool:
    """``tool`` with a MemSwarm error turned into a tool error the model reads."""

    @functools.wraps(tool)
    async def run(*args: Any, **kwargs: Any) -> Answer:
        try:
            return await tool(*args, **kwargs)
        except MemSwarmError as exc:
            raise ToolError(explain(exc)) from exc

    return run  # type: ignore[return-value]


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be from 1 to {MAX_LIMIT}, not {limit}")
    return limit


def _moment(time: str | None) -> datetime | None:
    if time is None:
        return None
    try:
        moment = datetime.fromisoformat(time)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInputError(f"time {time!r}: use ISO 8601 with a zone, e.g. "
                                "2025-01-31T12:00:00+00:00")
    return moment


class MemoryTools:
    """The tools over ``memory``; ``default_agent`` is who a stdio connection acts as."""

    def __init__(self, memory: SharedMemory, default_agent: str | None) -> None:
        self.memory = memory
        self.default_agent = default_agent
        self._verifying = asyncio.Lock()  # one walk of the whole log at a time, whoever asks

    def me(self, ctx: Context) -> AgentMemory:
        """The agent the request in ``ctx`` acts as."""
        return self.memory.agent(agent_of(ctx.request_context, self.default_agent))

    async def _run(self, ctx: Context, work: Callable[[AgentMemory], Any]) -> Any:
        """``work`` on this request's agent, in a worker thread (the memory blocks)."""
        agent = self.me(ctx)
        return await asyncio.to_thread(work, agent)

    def register(self, server: MCPServer[Any], *, read_only: bool, allow_forget: bool) -> None:
        """Add the tools to ``server``: the writing ones unless ``read_only``, search where
        the read model searches, ``forget_memory`` only if ``allow_forget``."""
        reads: list[Callable[..., Awaitable[Answer]]] = [
            self.read_memories, self.get_memory, self.memory_history, self.audit_log,
            self.memory_as_of, self.verify_log]
        if isinstance(self.memory.read_model, SearchableReadModel):
            reads.append(self.search_memories)
        for tool in reads:
            server.add_tool(tool, annotations=READS)
        if read_only:
            return
        server.add_tool(self.write_memory, annotations=ADDS)
        server.add_tool(self.update_memory, annotations=CHANGES)
        server.add_tool(self.delete_memory, annotations=ENDS)
        if allow_forget:
            server.add_tool(self.forget_memory, annotations=ENDS)

    # --- writing -------------------------------------------------------------------------------

    @_answers
    async def write_memory(self, value: Any, ctx: Context, context_id: str | None = None,
                           group_id: str | None = None, metadata: dict[str, Any] | None = None,
                           readable_by: list[str] | None = None,
                           writable_by: list[str] | None = None,
                           request_id: str | None = None) -> Answer:
        """Write a new memory as yourself; returns its memory_id.

        value: text or any JSON value. group_id: a group you belong to, whose members may then
        read it. context_id: a task or conversation it belongs to. readable_by/writable_by:
        who may read/change it ("agent:<id>", "group:<id>", "*"); by default you, and the
        group's members may read. request_id: any key of yours; calling again with the same
        request_id (a retry) writes nothing new and returns the same memory_id.
        """
        meta = {**(metadata or {}), **({"group_id": group_id} if group_id else {})}
        memory_id = await self._run(ctx, lambda me: me.write_scope(
            value, meta, context_id, event_id=request_id, readable_by=readable_by,
            writable_by=writable_by))
        return {"memory_id": memory_id}

    @_answers
    async def update_memory(self, memory_id: str, value: Any, ctx: Context,
                            expected_version: int | None = None,
                            metadata: dict[str, Any] | None = None,
                            request_id: str | None = None) -> Answer:
        """Replace a memory's value (and metadata, if given); returns the new version.

        expected_version: the version you read; if someone changed the memory since, nothing
        is written and the error says the current version. request_id: as for write_memory.
        """
        new = await self._run(ctx, lambda me: me.update(
            memory_id, value, metadata, expected_version=expected_version, event_id=request_id))
        return {"memory_id": memory_id, "version": new}

    @_answers
    async def delete_memory(self, memory_id: str, ctx: Context,
                            expected_version: int | None = None) -> Answer:
        """Delete a memory (its history keeps every version); returns the deleting version."""
        new = await self._run(ctx, lambda me: me.delete(memory_id,
                                                        expected_version=expected_version))
        return {"memory_id": memory_id, "version": new, "deleted": True}

    @_answers
    async def forget_memory(self, memory_id: str, reason: str, ctx: Context) -> Answer:
        """Erase the content of every version of a memory for good (e.g. personal data a user
        asked to remove); the log keeps that it was forgotten, by whom and why."""
        position = await self._run(ctx, lambda me: me.forget(memory_id, reason))
        return {"memory_id": memory_id, "forgotten_at_position": position}

    # --- reading -------------------------------------------------------------------------------

    @_answers
    async def read_memories(self, ctx: Context, agent_id: str | None = None,
                            group_id: str | None = None, context_id: str | None = None,
                            limit: int = 50) -> Answer:
        """The live memories you may read inside every scope given (none: all of them), the
        latest `limit`, oldest first; `total` counts them all."""
        _limit(limit)
        found = await self._run(ctx, lambda me: me.read_scope(agent_id, group_id, context_id))
        return {"memories": [shapes.entry(e) for e in found[-limit:]], "total": len(found)}

    @_answers
    async def get_memory(self, memory_id: str, ctx: Context) -> Answer:
        """One live memory with its current version (pass it as expected_version to update)."""
        return shapes.entry(await self._run(ctx, lambda me: me.get(memory_id)))

    @_answers
    async def search_memories(self, query: str, ctx: Context, agent_id: str | None = None,
                              group_id: str | None = None, context_id: str | None = None,
                              k: int = 5) -> Answer:
        """The k memories you may read closest in meaning to `query`, closest first, inside
        the scopes given; `distance` is smaller for closer."""
        _limit(k)
        hits = await self._run(ctx, lambda me: me.search(query, agent_id, group_id,
                                                         context_id, k))
        return {"hits": [{**shapes.entry(h.entry), "distance": h.distance} for h in hits]}

    @_answers
    async def memory_history(self, memory_id: str, ctx: Context) -> Answer:
        """Every version of a memory you may read, oldest first: who wrote what, and when."""
        found = await self._run(ctx, lambda me: me.history(memory_id))
        return {"memory_id": memory_id, "versions": [shapes.version(v) for v in found]}

    @_answers
    async def audit_log(self, ctx: Context, actor: str | None = None,
                        agent_id: str | None = None, group_id: str | None = None,
                        context_id: str | None = None, after: int = 0,
                        limit: int = 50) -> Answer:
        """The events you may see, in log order, matching every filter given (actor: who
        did it). Pass `next_after` as `after` for the next page."""
        page = await self._run(ctx, lambda me: me.audit(
            actor=actor, agent_id=agent_id, group_id=group_id, context_id=context_id,
            after=after, limit=_limit(limit)))
        return {"events": [shapes.event(e) for e in page.events], "next_after": page.next_after}

    @_answers
    async def memory_as_of(self, ctx: Context, position: int | None = None,
                           time: str | None = None, memory_id: str | None = None,
                           agent_id: str | None = None, group_id: str | None = None,
                           context_id: str | None = None) -> Answer:
        """The memories as they stood at a log `position` or an ISO 8601 `time`: the one
        named by memory_id, or those inside the scopes given."""
        moment = _moment(time)

        def past(me: AgentMemory) -> Answer:
            then = me.as_of(position, time=moment)
            if memory_id is not None:
                return {"memory": shapes.entry(then.get(memory_id))}
            return {"memories": [shapes.entry(e) for e in
                                 then.read_scope(agent_id, group_id, context_id)]}

        answer: Answer = await self._run(ctx, past)
        return answer

    @_answers
    async def verify_log(self, ctx: Context) -> Answer:
        """Check the log's hash chain and snapshots: `ok`, or not with why. An agent learns
        no count or position of events it may not read; one check runs at a time."""
        async with self._verifying:
            result = await self._run(ctx, lambda me: me.memory.verify())
        return {"ok": result.ok} if result.ok else {"ok": False, "reason": result.reason}
