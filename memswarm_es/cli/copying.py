"""``memswarm copy``: a log copied to another store, resumable and verified as it goes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..log.copy import copy_log
from .args import command
from .output import progress_bar, say
from .stores import open_log

if TYPE_CHECKING:
    from .args import Commands


def _copy(args: argparse.Namespace) -> int:
    source = open_log(args.source, create=False)
    try:
        target = open_log(args.target)
        try:
            copied = copy_log(source, target, args.batch_size, progress_bar("copying"))
            digest = target.digest()
        finally:
            target.close()
    finally:
        source.close()
    say(f"copied {copied} events; {args.target} is at {digest.position}:{digest.hash.hex()}")
    return 0


def add_commands(commands: Commands) -> None:
    """Register ``copy`` on the ``memswarm`` parser."""
    p = command(commands, "copy", _copy, "copy a log to another store (resumable, verified)")
    p.add_argument("--from", dest="source", required=True,
                   help="sqlite:///path.db, any SQLAlchemy URL, or gs://bucket/prefix")
    p.add_argument("--to", dest="target", required=True, help="the same kinds of URL")
    p.add_argument("--batch-size", type=int, default=1000)
