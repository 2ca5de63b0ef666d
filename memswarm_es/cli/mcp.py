"""``memswarm mcp``: the shared memory as an MCP server (extra ``mcp``); every argument after
``mcp`` goes to :func:`memswarm_es.integrations.mcp.main` (``memswarm mcp --help``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .args import Commands


def _mcp(args: argparse.Namespace) -> int:
    from ..integrations.mcp import main  # the mcp SDK: imported only by this command

    return main(args.rest)


def add_commands(commands: Commands) -> None:
    # No help of its own and every argument kept: the server parses its flags (and --help).
    parser = commands.add_parser("mcp", add_help=False, prefix_chars="\0",
                                 help="serve the memory over the Model Context Protocol")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_mcp)
