"""Who a connection acts as. The model never says: no tool takes an agent or an actor.

Over stdio the server acts as its configured agent. Over HTTP every request carries a bearer
token; the SDK's middleware refuses one without a known token (401) before any tool runs,
and the agent is the one the token names (:class:`StaticTokens`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext

from ...errors import PermissionDeniedError


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class StaticTokens:
    """A token verifier over fixed ``token -> agent_id`` pairs. Tokens are held and looked up
    by their SHA-256, so a lookup's time does not depend on how much of a guess matches."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._agents = {_digest(token): agent for token, agent in tokens.items()}

    async def verify_token(self, token: str) -> AccessToken | None:
        agent = self._agents.get(_digest(token))
        if agent is None:
            return None
        return AccessToken(token=token, client_id=agent, scopes=[], subject=agent)


def agent_of(ctx: ServerRequestContext[Any, Any], default: str | None) -> str:
    """The agent the request in ``ctx`` acts as: its bearer token's over HTTP, else
    ``default`` (the configured agent). Raises :class:`PermissionDeniedError` when there is
    neither (an HTTP request that bypassed authentication)."""
    request = ctx.request
    user = None if request is None else request.scope.get("user")
    if isinstance(user, AuthenticatedUser):
        return user.access_token.client_id
    if request is None and default is not None:
        return default
    raise PermissionDeniedError("anonymous", "use", "this memory without a bearer token")
