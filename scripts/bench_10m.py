#!/usr/bin/env python3
"""A 10M-event SQLite log end to end (issue #13): append, open, read, as_of, verify.

    python3 scripts/dev.py run python scripts/bench_10m.py [--events 10000000] [--dir DIR]

The memories are those of ``bench_peers.py`` (1k per agent, 10 groups, 500 contexts, ~190-byte
content), made a batch at a time, so memory stays bounded whatever ``--events``. They are
appended through :class:`SQLiteSharedMemory`'s log (the log alone: its SQL view is folded
at the next read), then one read folds them into the view; then a new process opens the file
and reads one agent's memories (time and resident memory); then the first scoped query of
the log fills its scope index (which appends leave alone); then ``read_scope`` of 1k
memories from the view (p50), ``as_of`` at positions of the second half each with a read of
one agent's memories then (p50), and
``verify`` (the whole hash chain and every snapshot). Progress goes to stderr; the table to
stdout. ``--dir`` keeps the file (and reuses one already there: the append is then skipped).
Prints; never asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial

from bench_peers import PER_AGENT, READER, memory, open_in_new_process
from benchtable import Cell, print_table
from benchtime import latencies, percentile, timed

from memswarm_es import SQLiteSharedMemory
from memswarm_es.log import EventFilter, scope_index
from memswarm_es.scopes import Scope

BATCH = 1000  # events per append


def progress(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


def reporter(what: str, every: float = 10.0) -> Callable[[int, int], None]:
    """A progress callback printing ``what`` at most every ``every`` seconds."""
    last = [0.0]

    def report(done: int, total: int) -> None:
        if time.monotonic() - last[0] >= every:
            last[0] = time.monotonic()
            progress(f"{what}: {done:,} of {total:,}")

    return report


def append(path: str, count: int, synchronous: str) -> float:
    """Append ``count`` memories in batches; return events/s."""
    agents = max(1, count // PER_AGENT)
    report = reporter("appended")
    with SQLiteSharedMemory(path, synchronous=synchronous) as mem:
        start = time.perf_counter()
        for first in range(0, count, BATCH):
            mem.log.append([memory(i, agents).new_event()
                            for i in range(first, min(first + BATCH, count))])
            report(first + BATCH, count)
        return count / (time.perf_counter() - start)


def peek(path: str, query: str) -> int:
    """The one number ``query`` finds in ``path`` (0 when its table is missing or empty),
    read without opening a memory (whose first use would fold the view)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            found = db.execute(query).fetchone()
        except sqlite3.OperationalError:  # no view yet
            found = None
    db.close()
    return int(found[0] or 0) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--dir", default=None, help="where to keep the log (reused if there)")
    parser.add_argument("--synchronous", default="NORMAL", help="SQLite's, for the appends")
    parser.add_argument("--reads", type=int, default=200, help="read_scope calls timed")
    parser.add_argument("--as-of", type=int, default=20, help="as_of calls timed")
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="bench-10m-")
    path = os.path.join(directory, f"log-{args.events}.db")
    rows: list[list[Cell]] = []
    if os.path.exists(path):
        progress(f"reusing {path}")
    else:
        progress(f"appending {args.events:,} events to {path}")
        rate = append(path, args.events, args.synchronous)
        rows.append([f"append ({BATCH} per batch, {args.synchronous})", "events/s", round(rate)])
    progress("the first read folds into the SQL view what it lacks")
    lacking = peek(path, "SELECT max(position) FROM memswarm_events") - peek(
        path, "SELECT checkpoint FROM memswarm_view_state")
    with SQLiteSharedMemory(path) as mem:  # (its first use folds: nothing before the clock)
        started = time.perf_counter()
        mem.read_scope(agent_id=READER)
        seconds = time.perf_counter() - started
    if lacking:
        rows.append([f"  the first read folds the {lacking:,} events the view lacks",
                     "events/s", round(lacking / seconds)])
    unindexed = peek(path, "SELECT max(position) FROM memswarm_events") - peek(
        path, "SELECT coalesce(max(position), 0) FROM memswarm_scopes")
    if unindexed > scope_index.LAG:
        progress(f"the first scoped query of the log indexes {unindexed:,} events")
        with SQLiteSharedMemory(path) as mem:
            seconds = timed(partial(mem.log.query, EventFilter(Scope(READER)), limit=1))
        rows.append([f"  the first scoped query of the log (audit, as_of) indexes {unindexed:,}",
                     "events/s", round(unindexed / seconds)])
    rows.append(["file size", "MB", round(os.path.getsize(path) / 2**20)])

    progress("open in a new process")
    opened = open_in_new_process(path)
    rows.append([f"open, to its first read ({opened['found']:,.0f})", "s", opened["seconds"]])
    rows.append(["  resident memory then", "MB", round(opened["rss_mb"])])

    with SQLiteSharedMemory(path) as mem:
        progress(f"{args.reads} reads")
        scope = Scope(READER)
        found = len(mem.read_model.read_scope(scope))
        rows.append([f"read_scope of {found:,} from the SQL view, p50", "ms",
                     percentile(latencies(partial(mem.read_model.read_scope, scope),
                                          args.reads), 50)])
        head = mem.log.head()
        progress(f"{args.as_of} as_of calls, each with a read of one agent's memories then")
        rng = random.Random(13)

        def past_read() -> None:
            mem.as_of(rng.randrange(head // 2, head + 1)).read_scope(agent_id=READER)

        rows.append([f"as_of at {head:,} events + a read, p50", "ms",
                     percentile(latencies(past_read, args.as_of), 50)])
        progress("verify")
        started = time.perf_counter()
        result = mem.verify(reporter("verified"))
        rows.append([f"verify ({'ok' if result.ok else 'FAILED'}: {result.checked:,} events)",
                     "s", time.perf_counter() - started])
    print_table(f"MemSwarm, a {args.events:,}-event SQLite log end to end",
                ["measure", "unit", "MemSwarm"], rows, decimals=[0, 0, 3],
                notes=[f"machine: {platform.platform()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
                       f"log: {path}"])
    if args.dir is None:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
