"""What the ``memswarm`` commands print, and where: results and status lines on stdout, progress
bars and errors on stderr. Every command prints through this module."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from projections.projector import Progress

WIDTH = 48  # characters of a value shown in a table cell

# Control characters (and lone surrogates) in a cell would forge lines or break the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def say(text: str = "") -> None:
    """One or more lines of a command's result or status, flushed at once."""
    print(text, flush=True)


def fail(command: str, message: str) -> None:
    """An error line naming the command, on stderr."""
    print(f"memswarm {command}: {message}", file=sys.stderr, flush=True)


def scope_cell(agent_id: str | None, group_id: str | None, context_id: str | None) -> str:
    """``agent/group/context``, ``-`` for a part that is not set."""
    return "/".join(p or "-" for p in (agent_id, group_id, context_id))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell, a rule under the headers."""
    cells = [[str(c) for c in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    text = "-" if value is None else _CONTROL.sub(_escaped, str(value))
    return text if len(text) <= WIDTH else text[:WIDTH - 1] + "…"


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def progress_bar(label: str, stream: TextIO | None = None) -> Progress:
    """A progress callback drawing ``label [#####.....] 50% 5/10`` on stderr."""
    out = stream or sys.stderr

    def draw(done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = int(30 * share)
        out.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {share:4.0%} {done}/{total}")
        if done >= total:
            out.write("\n")
        out.flush()

    return draw


def progress_lines(label: str) -> Progress:
    """A progress callback printing ``label: position/head events (50%)`` on stdout, at most
    once a second (for logs read by a supervisor rather than a terminal)."""
    last = 0.0

    def report(position: int, head: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 1.0 or position >= head:
            last = now
            share = 100.0 * position / head if head else 100.0
            say(f"{label}: {position}/{head} events ({share:.0f}%)")

    return report
