"""``memswarm mcp``: a shared memory as an MCP server (extra ``mcp``).

Each connection acts as one agent (:mod:`.identity`): over stdio the configured one, over
streamable HTTP the one its bearer token names. :mod:`.config` reads flags and environment
and opens the memory, :mod:`.tools` and :mod:`.resources` are what a model sees,
:mod:`.server` puts them together and runs.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server as ``argv`` (the process's arguments by default) configures it."""
    from .server import main as run

    return run(argv)
