#!/usr/bin/env python3
"""Benchmark time travel: ``as_of`` latency with snapshots every N events, against folding from
position 0, on one SQLite log.

    python3 scripts/dev.py run python scripts/bench_timetravel.py [--events 1000000]

The workload keeps a bounded live set, as agents do: ``--memories`` memories are written (by
``--agents`` agents), then updated over and over (one in 50 updates is a delete followed by a
new write). Building a log of a million events takes minutes: the log is kept in ``--cache``
(a file named by the workload's parameters) and reused by later runs.

Besides the walks with snapshots, it times what an agent asks of the past: ``as_of(p)`` and a
scoped read of one agent's memories, and ``as_of(p).get(id)``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from functools import partial

from benchtable import Cell, print_table
from benchtime import percentile, timed

from memswarm_es.events import EventType, NewEvent
from memswarm_es.log import SQLEventLog
from memswarm_es.scopes import Scope
from memswarm_es.snapshots import snapshot_store_for
from memswarm_es.timetravel import TimeMachine


def build(log: SQLEventLog, events: int, memories: int, agents: int,
          batch: int = 2000) -> None:
    """Append ``events`` events over a live set of ``memories`` memories of ``agents``
    agents."""
    rng = random.Random(7)
    versions: dict[str, int] = {}
    scopes: dict[str, Scope] = {}  # an update names its memory's scope, as the facade's do
    live: list[str] = []
    pending: list[NewEvent] = []
    next_id = 0
    for i in range(events):
        if len(live) < memories:
            memory_id, next_id = f"m{next_id:08d}", next_id + 1
            scope = scopes[memory_id] = Scope(f"agent-{next_id % agents}", f"g{i % 7}")
            versions[memory_id] = 1
            live.append(memory_id)
            new = NewEvent.create(EventType.MEMORY_WRITTEN, scope, str(scope.agent_id),
                                  {"value": f"note {i}", "metadata": {"i": i}},
                                  memory_id=memory_id, version=1)
        else:
            slot = rng.randrange(len(live))
            memory_id = live[slot]
            versions[memory_id] += 1
            kind = EventType.MEMORY_DELETED if i % 50 == 0 else EventType.MEMORY_UPDATED
            data = {} if kind == EventType.MEMORY_DELETED else {"value": f"note {i}"}
            new = NewEvent.create(kind, scopes[memory_id], "bench", data, memory_id=memory_id,
                                  version=versions[memory_id])
            if kind == EventType.MEMORY_DELETED:
                live[slot] = live[-1]
                live.pop()
        pending.append(new)
        if len(pending) == batch:
            log.append(pending)
            pending = []
    if pending:
        log.append(pending)


def cached_log(args: argparse.Namespace) -> tuple[SQLEventLog, str]:
    """The log of the workload ``args`` name, built into ``--cache`` unless already there;
    with how it was come by."""
    os.makedirs(args.cache, exist_ok=True)
    path = os.path.join(args.cache, f"memswarm-timetravel-{args.events}-{args.memories}-"
                                    f"{args.agents}.db")
    if os.path.exists(path):
        return SQLEventLog(f"sqlite:///{path}", create=False, synchronous="OFF"), f"from {path}"
    print(f"building {args.events:,} events over {args.memories:,} live memories into "
          f"{path}...", flush=True)
    part = f"{path}.part"
    for leftover in (part, f"{part}-wal", f"{part}-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    log = SQLEventLog(f"sqlite:///{part}", synchronous="OFF")
    seconds = timed(lambda: build(log, args.events, args.memories, args.agents))
    log.close()
    os.replace(part, path)  # only a finished build is ever reused
    return (SQLEventLog(f"sqlite:///{path}", create=False, synchronous="OFF"),
            f"built in {seconds:.0f} s")


def past_reads(machine: TimeMachine, positions: list[int], agent_id: str
               ) -> tuple[list[float], list[float]]:
    """Milliseconds of ``as_of(p)`` plus a read of ``agent_id``'s memories, and of
    ``as_of(p)`` plus a ``get`` of one of them, at each of ``positions``."""
    scoped: list[float] = []
    gets: list[float] = []
    for p in positions:
        start = time.perf_counter()
        found = machine.at(p).read_scope(agent_id=agent_id)
        scoped.append((time.perf_counter() - start) * 1000)
        if found:
            memory_id = found[len(found) // 2].memory_id
            gets.append(timed(partial(lambda at, m: machine.at(at).get(m), p, memory_id)) * 1000)
    return scoped, gets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--memories", type=int, default=10_000, help="size of the live set")
    parser.add_argument("--agents", type=int, default=10, help="agents sharing the live set")
    parser.add_argument("--every", type=int, nargs="+", default=[20_000, 100_000],
                        help="snapshot intervals to measure")
    parser.add_argument("--queries", type=int, default=20, help="as_of calls per measure")
    parser.add_argument("--baseline-queries", type=int, default=1,
                        help="whole views folded from 0 (slow)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "memswarm-bench"),
                        help="where built logs are kept for later runs")
    args = parser.parse_args()

    log, origin = cached_log(args)
    head = log.head()
    rng = random.Random(11)
    positions = [rng.randrange(head // 2, head + 1) for _ in range(args.queries)]
    store = snapshot_store_for(log)
    store.delete_from(0)
    baseline = [timed(TimeMachine(log, store, every=head + 1).at(p).view) * 1000
                for p in positions[:args.baseline_queries]]
    base_p50 = statistics.median(baseline)
    rows: list[list[Cell]] = [["whole view, folded from position 0 (peer)", "-", "-", base_p50,
                               max(baseline), 1.0]]
    for every in args.every:
        store.delete_from(0)
        machine = TimeMachine(log, store, every=every)
        first = timed(machine.at(head).view)  # walks the log, saving snapshots
        samples = [timed(machine.at(p).view) * 1000 for p in positions]
        p50 = statistics.median(samples)
        rows.append([f"whole view, snapshots every {every:,}", f"{first:.1f} s", head // every,
                     p50, percentile(samples, 99), base_p50 / p50])
    store.delete_from(0)
    machine = TimeMachine(log, store)  # as a memory makes it, with its snapshots
    machine.at(head).view()
    scoped, gets = past_reads(machine, positions, "agent-0")
    for name, samples in ((f"as_of + read_scope(agent_id) ({args.memories // args.agents:,} "
                           "live)", scoped), ("as_of + get(id)", gets)):
        p50 = statistics.median(samples)
        rows.append([name, "-", "-", p50, percentile(samples, 99), base_p50 / p50])
    store.delete_from(0)
    log.close()

    print_table(f"as_of on a SQLite log of {head:,} events ({args.memories:,} live memories of "
                f"{args.agents:,} agents; {origin})",
                ["method", "first walk", "snapshots", "p50 ms", "max/p99 ms", "speed-up x"],
                rows, decimals=[0, 0, 0, 1, 1, 0])


if __name__ == "__main__":
    main()
