"""Arguments several commands share, and the types of the parser's parts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not subscriptable at run time
    # What ``add_parser`` is called on: the ``memswarm`` parser's subcommands.
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
# A command: the parsed arguments in, the exit status out.
Handler = Callable[[argparse.Namespace], int]

DEFAULT_LOG = "sqlite:///memswarm.db"


def command(commands: Commands, name: str, handler: Handler,
            help_text: str) -> argparse.ArgumentParser:
    """A subcommand running ``handler``."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    parser.set_defaults(func=handler)
    return parser


def log_argument(parser: argparse.ArgumentParser) -> None:
    """``--log URL``: the event log the command works on."""
    parser.add_argument("--log", default=DEFAULT_LOG,
                        help="the event log: sqlite:///path.db, any SQLAlchemy URL or "
                             "gs://bucket/prefix (default: %(default)s)")


def scope_arguments(parser: argparse.ArgumentParser) -> None:
    """``--agent-id``, ``--group-id``, ``--context-id``: a scope to filter by."""
    parser.add_argument("--agent-id")
    parser.add_argument("--group-id")
    parser.add_argument("--context-id")
