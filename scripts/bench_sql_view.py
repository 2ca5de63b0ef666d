"""The SQL view kept in a SQLite log's file (issue #13): open time and resident memory of
``SQLiteSharedMemory`` on a big log, and ``read_scope`` of one agent's 1k memories against a
raw sqlite3 read of the same rows with their msgpack decode; also what keeping the view costs
an append. Prints; asserts nothing.

    python scripts/bench_sql_view.py --events 1000000 --dir /tmp/bench
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack

from memswarm_es import SQLiteSharedMemory
from memswarm_es.events import EventType, NewEvent
from memswarm_es.log.sql import SQLEventLog
from memswarm_es.scopes import Scope

ROOT = Path(__file__).resolve().parent.parent
PER_AGENT = 1000
GROUPS = 10
CONTEXTS = 500
OPEN = """
import resource, sys, time
started = time.perf_counter()
from memswarm_es import SQLiteSharedMemory
imported = time.perf_counter()
mem = SQLiteSharedMemory(sys.argv[1])
opened = time.perf_counter()
first = mem.read_scope(agent_id="agent0")
read = time.perf_counter()
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
print(imported - started, opened - imported, read - opened, rss, len(first))
"""


def events(count: int, start: int = 0) -> Iterator[NewEvent]:
    """``count`` writes of ~200-byte values, 1k per agent, over 10 groups and 500 contexts."""
    for i in range(start, start + count):
        agent = f"agent{i % max(count // PER_AGENT, 1)}"
        scope = Scope(agent, f"group{i % GROUPS}", f"ctx{i % CONTEXTS}")
        yield NewEvent.create(EventType.MEMORY_WRITTEN, scope, agent,
                              {"value": f"memory {i} " + "x" * 180, "metadata": {"n": i}},
                              memory_id=f"m{i:09d}", version=1, event_id=f"m{i:09d}")


def build(path: Path, count: int, batch: int = 1000) -> float:
    """Append ``count`` events in batches through a log that keeps the view; events/s."""
    mem = SQLiteSharedMemory(str(path), synchronous="NORMAL")
    made = list(events(count))
    started = time.perf_counter()
    for at in range(0, count, batch):
        mem.log.append(made[at:at + batch])
    rate = count / (time.perf_counter() - started)
    mem.close()
    return rate


def p50_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def append_costs(tmp: Path, count: int) -> None:
    """Batched appends (100 a batch) and single writes, with and without the view kept."""
    made = list(events(count, start=10**8))
    singles = list(events(2000, start=2 * 10**8))
    for kept in (False, True):
        path = tmp / f"append-{kept}.db"
        log = SQLiteSharedMemory(str(path), synchronous="NORMAL").log if kept else \
            SQLEventLog(f"sqlite:///{path}", synchronous="NORMAL")
        started = time.perf_counter()
        for at in range(0, count, 100):
            log.append(made[at:at + 100])
        batched = count / (time.perf_counter() - started)
        started = time.perf_counter()
        for new in singles:
            log.append([new])
        single = len(singles) / (time.perf_counter() - started)
        log.close()
        print(f"append {'with' if kept else 'without'} the view: batches of 100 "
              f"{batched:,.0f}/s, one event per append (sync=NORMAL) {single:,.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None, help="where to keep the log (reused if there)")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="bench-sqlview-"))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"log-{args.events}.db"
    if not path.exists():
        print(f"building {args.events:,} events in batches of 1000 (view kept): "
              f"{build(path, args.events):,.0f} events/s")
    print(f"file: {sum(p.stat().st_size for p in tmp.glob(path.name + '*')) / 2**20:,.0f} MB")

    for attempt in range(3):  # a fresh process each time: import, open, first read, RSS
        out = subprocess.run([sys.executable, "-c", OPEN, str(path)], capture_output=True,
                             text=True, check=True, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout.split()
        imported, opened, read, rss, found = out
        print(f"open #{attempt + 1}: import {float(imported):.3f} s, SQLiteSharedMemory() "
              f"{float(opened):.3f} s, first read_scope ({found} memories) {float(read):.3f} s, "
              f"RSS after {rss} MB")

    mem = SQLiteSharedMemory(str(path))
    view = mem.read_model
    raw = sqlite3.connect(path)
    agent = "agent7"
    query = "SELECT entry FROM memswarm_view_memories WHERE agent_id = ? ORDER BY position"

    def raw_read() -> list[object]:
        return [msgpack.unpackb(blob) for (blob,) in raw.execute(query, (agent,))]

    scope = Scope(agent_id=agent)
    handle = mem.agent(agent)
    assert len(raw_read()) == len(view.read_scope(scope)) == PER_AGENT
    assert len(handle.read_scope(agent_id=agent)) == PER_AGENT
    results: dict[str, list[float]] = {}
    cases: dict[str, Callable[[], object]] = {
        "raw sqlite3 + msgpack decode": raw_read,
        "SQL view read_scope (operator)": lambda: view.read_scope(scope),
        "SQL view read_scope (the agent)": lambda: view.read_scope(scope, agent),
        "facade read_scope (catch-up + read)": lambda: mem.read_scope(agent_id=agent),
        "agent handle read_scope": lambda: handle.read_scope(agent_id=agent),
    }
    for _ in range(5):  # interleaved rounds, so that load on the machine hits every case
        for name, fn in cases.items():
            results.setdefault(name, []).append(p50_ms(fn, args.runs // 5))
    base = statistics.median(results["raw sqlite3 + msgpack decode"])
    print(f"read_scope of {PER_AGENT} memories, p50 over {args.runs} runs:")
    for name, values in results.items():
        p50 = statistics.median(values)
        print(f"  {name:40s} {p50:7.2f} ms  {p50 / base:5.2f}x raw")
    raw.close()
    mem.close()
    append_costs(tmp, 20_000)


if __name__ == "__main__":
    main()
