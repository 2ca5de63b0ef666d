"""The ``memswarm`` command.

Commands are grouped by what they touch, one module each: :mod:`.memories` (write, read,
search...), :mod:`.history` (the log as the system of record), :mod:`.groups` (memberships),
:mod:`.stats`, :mod:`.projection` (read models built from the log), :mod:`.copying` (a log to
another store), :mod:`.demo`. Each has ``add_commands(group)``; a new group of commands (such
as ``memswarm mcp``) is one more entry in :data:`COMMAND_MODULES`. Settings resolve through
:mod:`.settings`, stores open through :mod:`.stores`, and everything prints through
:mod:`.output`.

Bad input (a usage error, or a :class:`~memswarm_es.errors.MemSwarmError` such as a missing
log or bad metadata) exits 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

import click

from .. import __version__
from ..errors import MemSwarmError
from . import copying, demo, groups, history, logs, mcp, memories, projection, stats
from .output import fail

#: The modules whose ``add_commands(group)`` register the commands, in the order of ``--help``.
COMMAND_MODULES: tuple[ModuleType, ...] = (memories, history, groups, stats, projection,
                                           copying, demo, mcp)


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order registered, not sorted


def cli() -> click.Group:
    """The ``memswarm`` command group, every command registered."""

    @click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="memswarm")
    def memswarm() -> None:
        """MemSwarm: an event-sourced shared memory for multi-agent systems.

        Settings come from flags, then the environment (MEMSWARM_LOG_URL, MEMSWARM_READ_MODEL,
        MEMSWARM_REDIS_URL, MEMSWARM_PREFIX, MEMSWARM_AGENT_ID, MEMSWARM_CHROMA_PATH), then a
        config file (--config, MEMSWARM_CONFIG, or ./memswarm.toml).
        """

    for module in COMMAND_MODULES:
        add: Callable[[click.Group], None] = module.add_commands
        add(memswarm)
    return memswarm


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` (the process's arguments by default); its exit status."""
    args = list(argv) if argv is not None else None
    group = cli()
    logs.configure()
    try:
        status = group.main(args, prog_name="memswarm", standalone_mode=False)
    except click.ClickException as exc:  # usage errors, bad values
        fail(_command(group, args), f"error: {exc.format_message()}")
        return exc.exit_code if exc.exit_code != 1 else 2
    except click.Abort:
        fail(_command(group, args), "aborted")
        return 130
    except MemSwarmError as exc:
        fail(_command(group, args), f"{type(exc).__name__}: {exc}")
        return 2
    return status if isinstance(status, int) else 0


def _command(group: click.Group, argv: list[str] | None) -> str:
    """The name of the command in ``argv``, for error lines (empty if none is named)."""
    import sys

    words = argv if argv is not None else sys.argv[1:]
    return next((w for w in words if w in group.commands), "")
