"""``memswarm copy``: a log copied to another store, resumable and verified as it goes."""

from __future__ import annotations

import click

from ..log.copy import copy_log
from .options import memswarm_command
from .output import progress_bar, result
from .settings import log_url
from .stores import open_log


def add_commands(group: click.Group) -> None:
    """Register ``copy`` on ``group``."""

    @memswarm_command(group, "copy", "copy a log to another store (resumable, verified)")
    @click.option("--from", "source_url", required=True,
                  help="a SQLite path, sqlite:///path.db, any SQLAlchemy URL, or gs://bucket/prefix")
    @click.option("--to", "target_url", required=True, help="the same kinds of place")
    @click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True)
    def copy(source_url: str, target_url: str, batch_size: int, as_json: bool) -> int:
        source = open_log(log_url(source_url), create=False)
        try:
            target = open_log(log_url(target_url))
            try:
                with progress_bar("copying") as progress:
                    copied = copy_log(source, target, batch_size, progress)
                digest = target.digest()
            finally:
                target.close()
        finally:
            source.close()
        shown = f"{digest.position}:{digest.hash.hex()}"
        result(as_json, {"copied": copied, "digest": shown},
               f"copied {copied} events; {target_url} is at {shown}")
        return 0
