"""Memories as resources a client can read and subscribe to.

``memswarm://memory/{memory_id}`` is one memory; ``memswarm://agent/{id}``,
``memswarm://group/{id}`` and ``memswarm://context/{id}`` are the live memories of a scope
(ids percent-encoded). Each answers as the connection's agent sees it. ``resources/subscribe``
on any of them starts (once per connection) a :class:`Watch`: a subscription of the agent's
memory versions (:meth:`AgentMemory.subscribe`, so only what it may read) that sends
``notifications/resources/updated`` for each subscribed URI a new version falls under.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, SubscribeRequestParams, UnsubscribeRequestParams

from ...aio import AsyncSharedMemory
from ...audit import MemoryVersion
from ...errors import ChainBrokenError, MemoryNotFoundError, MemSwarmError
from ...memory import SharedMemory
from ...scopes import SCOPE_NAMES
from ...subscribe import AsyncSubscription
from . import shapes
from .identity import agent_of

SCHEME = "memswarm"
KINDS = ("memory", "agent", "group", "context")
_STATE_KEY = "memswarm.watch"

logger = logging.getLogger(__name__)


def uri(kind: str, id_: str) -> str:
    """The resource URI of a memory (``kind`` ``memory``) or of a scope."""
    return f"{SCHEME}://{kind}/{quote(id_, safe='')}"


def parse_uri(text: str) -> tuple[str, str]:
    """``(kind, id)`` of a resource URI; raises :class:`ValueError` for any other text."""
    parts = urlsplit(text)
    id_ = unquote(parts.path[1:])
    if parts.scheme != SCHEME or parts.netloc not in KINDS or not id_ or "/" in parts.path[1:]:
        raise ValueError(f"{text!r} is no MemSwarm resource: use {SCHEME}://KIND/ID with KIND "
                         f"one of {', '.join(KINDS)}")
    return parts.netloc, id_


def uris_of(version: MemoryVersion) -> set[str]:
    """The URIs a new version of a memory updates: the memory's, and its scopes'."""
    found = {uri("memory", version.memory_id)}
    for name, kind in zip(SCOPE_NAMES, KINDS[1:], strict=True):
        id_ = getattr(version.scope, name)
        if id_ is not None:
            found.add(uri(kind, id_))
    return found


class Watch:
    """The resources one connection subscribed to, and the task telling it of their updates.

    A log put back from a copy under the subscription (:class:`ChainBrokenError`) may have
    changed any resource: every one subscribed to is reported updated, and the watch goes on
    from the log's head."""

    def __init__(self, subscription: AsyncSubscription,
                 subscribe: Callable[[], Awaitable[AsyncSubscription]],
                 send: Callable[[str], Awaitable[None]]) -> None:
        self.uris: dict[str, str] = {}  # canonical URI -> as the client subscribed to it
        self._subscription = subscription
        self._subscribe = subscribe
        self._send = send
        self._task = asyncio.get_running_loop().create_task(self._feed())

    async def _feed(self) -> None:
        try:
            while True:
                try:
                    async for version in self._subscription:
                        for updated in sorted(uris_of(version) & self.uris.keys()):
                            await self._send(self.uris[updated])
                    return
                except ChainBrokenError as exc:
                    logger.warning("resource notifications go on from the log's head: %s", exc)
                    self._subscription = await self._subscribe()
                    for subscribed in sorted(self.uris.values()):
                        await self._send(subscribed)
        except MemSwarmError:
            logger.exception("resource notifications stopped")

    async def stop(self) -> None:
        self._subscription.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _connection(ctx: ServerRequestContext[Any, Any]) -> Connection:
    """The connection a request came on, which outlives the request: the SDK's per-request
    ``ServerSession`` keeps it private (mcp 2.3) but it is the public per-connection home of
    state and teardown (``state``, ``exit_stack``)."""
    connection: Connection = ctx.session._connection
    return connection


class MemoryResources:
    """The resources over ``memory``; ``default_agent`` is who a stdio connection acts as."""

    def __init__(self, memory: SharedMemory, default_agent: str | None) -> None:
        self.swarm = AsyncSharedMemory(memory)
        self.default_agent = default_agent

    def register(self, server: MCPServer[Any]) -> None:
        """Add the resource templates and the subscribe handlers to ``server``."""
        for kind in KINDS:
            read = self._read_memory if kind == "memory" else self._read_scope(kind)
            server.resource(f"{SCHEME}://{kind}/{{id}}", name=f"memswarm-{kind}",
                            mime_type="application/json",
                            description=_DESCRIPTIONS[kind])(read)
        lowlevel = server._lowlevel_server  # the SDK's own seam for handlers MCPServer lacks
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams,
                                     self._subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams,
                                     self._unsubscribe)

    async def _read_memory(self, id: str, ctx: Context) -> str:
        me = self.swarm.agent(agent_of(ctx.request_context, self.default_agent))
        try:
            return json.dumps(shapes.entry(await me.get(id)))  # the SDK decoded the id
        except MemoryNotFoundError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except MemSwarmError as exc:
            raise ResourceError(f"{type(exc).__name__}: {exc}") from exc

    def _read_scope(self, kind: str) -> Callable[[str, Context], Awaitable[str]]:
        async def read(id: str, ctx: Context) -> str:
            me = self.swarm.agent(agent_of(ctx.request_context, self.default_agent))
            try:
                found = await me.read_scope(**{f"{kind}_id": id})
            except MemSwarmError as exc:
                raise ResourceError(f"{type(exc).__name__}: {exc}") from exc
            return json.dumps([shapes.entry(e) for e in found])

        return read

    async def _subscribe(self, ctx: ServerRequestContext[Any, Any],
                         params: SubscribeRequestParams) -> dict[str, Any]:
        canonical = _canonical(params.uri)
        connection = _connection(ctx)
        watch = connection.state.get(_STATE_KEY)
        if watch is None:
            me = self.swarm.agent(agent_of(ctx, self.default_agent))
            watch = Watch(await me.subscribe(), me.subscribe, connection.send_resource_updated)
            connection.state[_STATE_KEY] = watch
            connection.exit_stack.push_async_callback(watch.stop)
        watch.uris[canonical] = params.uri
        return {}

    async def _unsubscribe(self, ctx: ServerRequestContext[Any, Any],
                           params: UnsubscribeRequestParams) -> dict[str, Any]:
        watch = _connection(ctx).state.get(_STATE_KEY)
        if watch is not None:
            watch.uris.pop(_canonical(params.uri), None)
        return {}


def _canonical(text: str) -> str:
    """``text`` as :func:`uri` spells it (clients may percent-encode otherwise)."""
    try:
        return uri(*parse_uri(text))
    except ValueError as exc:
        raise MCPError(code=INVALID_PARAMS, message=str(exc)) from exc


_DESCRIPTIONS = {
    "memory": "One memory you may read (JSON); subscribe to hear of its new versions.",
    "agent": "The live memories of an agent's scope that you may read (JSON).",
    "group": "The live memories of a group that you may read (JSON).",
    "context": "The live memories of a context (a task, a conversation) you may read (JSON).",
}
