"""The ``memswarm`` command.

Commands are grouped by what they touch: :mod:`.demo`, :mod:`.projection` (read models built
from the log), :mod:`.history` (the log as the system of record), :mod:`.copying` (a log to
another store), :mod:`.groups` (memberships). Every command opens stores through
:mod:`.stores` and prints through :mod:`.output`. A command that fails with a
:class:`~memswarm_es.errors.MemSwarmError` exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from ..errors import MemSwarmError
from . import copying, demo, groups, history, mcp, projection
from .args import Handler
from .output import fail


def parser() -> argparse.ArgumentParser:
    """The ``memswarm`` argument parser, every command registered."""
    top = argparse.ArgumentParser(prog="memswarm", description="The memswarm command.")
    commands = top.add_subparsers(dest="command", required=True)
    for group in (demo, projection, copying, history, groups, mcp):
        group.add_commands(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` (the process's arguments by default); its exit status."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler: Handler = args.func
    try:
        return handler(args)
    except MemSwarmError as exc:
        fail(args.command, f"{type(exc).__name__}: {exc}")
        return 2
