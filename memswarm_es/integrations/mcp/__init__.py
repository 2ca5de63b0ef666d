"""``memswarm mcp``: a shared memory as an MCP server (extra ``mcp``).

Each connection acts as one agent (:mod:`.identity`): over stdio the configured one, over
streamable HTTP the one its bearer token names. :mod:`.config` reads flags and environment
and opens the memory, :mod:`.tools` and :mod:`.resources` are what a model sees,
:mod:`.server` puts them together and runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server as ``argv`` (the process's arguments by default) configures it; exit
    status 2, with one line on stderr, where the ``mcp`` SDK is not installed."""
    try:
        from .server import main as run
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in {"mcp", "mcp_types"}:
            raise
        print("memswarm mcp: needs the mcp extra: pip install 'memswarm[mcp]'", file=sys.stderr)
        return 2
    return run(argv)
