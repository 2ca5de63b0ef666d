"""``memswarm mcp``: the shared memory as an MCP server (extra ``mcp``); every argument after
``mcp`` goes to :func:`memswarm_es.integrations.mcp.main` (``memswarm mcp --help``)."""

from __future__ import annotations

import click


def add_commands(group: click.Group) -> None:
    """Register ``mcp`` on ``group``: no options of its own, the server parses its flags."""

    @group.command("mcp", add_help_option=False,
                   context_settings={"ignore_unknown_options": True,
                                     "allow_interspersed_args": False})
    @click.argument("rest", nargs=-1, type=click.UNPROCESSED)
    def mcp(rest: tuple[str, ...]) -> int:
        """Serve the memory over the Model Context Protocol (memswarm mcp --help)."""
        from ..integrations.mcp import main  # the mcp SDK: imported only by this command

        return main(list(rest))
