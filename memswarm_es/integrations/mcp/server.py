"""The MCP server put together: :func:`build` over a shared memory, :func:`main` to run it."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl

from ...errors import MemSwarmError
from ...memory import SharedMemory
from .config import Config, open_memory, parse
from .identity import StaticTokens
from .resources import MemoryResources
from .tools import MemoryTools

INSTRUCTIONS = (
    "A memory shared with other agents. Every change you make is recorded as yours; you see "
    "only what you may read. Write what others should know with write_memory (give a "
    "request_id to make retries safe), read it back with read_memories, get_memory or "
    "search_memories, and pass the version you read as expected_version when you update.")


def build(memory: SharedMemory, config: Config) -> MCPServer[Any]:
    """An MCP server over ``memory``, its tools chosen and its agents identified as
    ``config`` says (bearer tokens when ``config.http`` is set)."""
    auth: dict[str, Any] = {}
    if config.http is not None:
        host, port = config.http
        here = f"http://{host}:{port}"
        auth = {"token_verifier": StaticTokens(config.tokens),
                "auth": AuthSettings(issuer_url=AnyHttpUrl(here),
                                     resource_server_url=AnyHttpUrl(f"{here}/mcp"),
                                     validate_token_resource=False)}
    server: MCPServer[Any] = MCPServer("memswarm", instructions=INSTRUCTIONS,
                                       log_level="WARNING", subscriptions=False, **auth)
    MemoryTools(memory, config.agent_id).register(server, read_only=config.read_only,
                                                  allow_forget=config.allow_forget)
    MemoryResources(memory, config.agent_id).register(server)
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """Serve as ``argv`` and the environment say; exit status 2 for a configuration that
    cannot be used (one line on stderr)."""
    try:
        config = parse(sys.argv[1:] if argv is None else argv, os.environ)
        memory = open_memory(config)
    except MemSwarmError as exc:
        print(f"memswarm mcp: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with memory:
        server = build(memory, config)
        if config.http is None:
            server.run("stdio")
        else:
            host, port = config.http
            server.run("streamable-http", host=host, port=port)
    return 0
