"""What the ``memswarm`` commands print, and where: results and status lines on stdout, progress
bars and errors on stderr. Every command prints through this module.

A result is printed as JSON with ``--json``; otherwise as text: a Rich table on a terminal, and
plain columns (one row per line, a rule under the headers) when stdout is a pipe or a file, so
that ``grep`` and ``cut`` keep working. Progress bars are drawn only on a terminal.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from projections.projector import Progress

WIDTH = 48  # characters of a value shown in a table cell

# Control characters (and lone surrogates) in a cell would forge lines or break the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def say(text: str = "") -> None:
    """One or more lines of a command's result or status, flushed at once."""
    print(text, flush=True)


def fail(command: str, message: str) -> None:
    """An error line naming the command, on stderr."""
    print(f"memswarm {command}: {message}".rstrip(), file=sys.stderr, flush=True)


def emit_json(data: Any) -> None:
    """``data`` as one line of JSON (times as ISO strings, bytes as base64)."""
    say(json.dumps(data, default=_jsonable, ensure_ascii=False))


def result(as_json: bool, data: Any, text: str) -> None:
    """A command's result: ``data`` as JSON with ``--json``, else ``text``."""
    if as_json:
        emit_json(data)
    else:
        say(text)


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def scope_cell(agent_id: str | None, group_id: str | None, context_id: str | None) -> str:
    """``agent/group/context``, ``-`` for a part that is not set."""
    return "/".join(p or "-" for p in (agent_id, group_id, context_id))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell, a rule under the headers."""
    cells = [[str(c) for c in headers], *[[cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def show_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A table on stdout: Rich's on a terminal, :func:`table` otherwise."""
    if not sys.stdout.isatty():
        say(table(headers, rows))
        return
    from rich.console import Console
    from rich.table import Table

    shown = Table(*headers, header_style="bold")
    for row in rows:
        shown.add_row(*(cell(c) for c in row))
    Console(highlight=False).print(shown)


def cell(value: object) -> str:
    """``value`` as one line of a table: control characters escaped, long text cut."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    text = "-" if value is None else _CONTROL.sub(_escaped, str(value))
    return text if len(text) <= WIDTH else text[:WIDTH - 1] + "…"


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


@contextmanager
def progress_bar(label: str) -> Iterator[Progress | None]:
    """A progress callback ``(done, total)`` drawing a Rich bar on stderr while the block runs,
    if stderr is a terminal; ``None`` (nothing drawn) otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def draw(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, done))

        yield draw


def throttled(report: Callable[[int, int], None], every: float,
              clock: Callable[[], float]) -> Progress:
    """``report`` called with ``(position, head)`` when the position moved, at most once every
    ``every`` seconds (and always on reaching the head): nothing while idle."""
    last_time, last_position = -every, -1

    def progress(position: int, head: int) -> None:
        nonlocal last_time, last_position
        now = clock()
        if position != last_position and (now - last_time >= every or position >= head):
            last_time, last_position = now, position
            report(position, head)

    return progress
