#!/usr/bin/env python3
"""Benchmark time travel: ``as_of`` latency with snapshots every N events, against folding from
position 0, on one SQLite log.

    python3 scripts/dev.py run python scripts/bench_timetravel.py [--events 1000000]

The workload keeps a bounded live set, as agents do: ``--memories`` memories are written, then
updated over and over (one in 50 updates is a delete followed by a new write).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
from functools import partial

from benchtable import Cell, print_table
from benchtime import percentile, timed

from memswarm_es.events import EventType, NewEvent
from memswarm_es.log import SQLEventLog
from memswarm_es.scopes import Scope
from memswarm_es.snapshots import snapshot_store_for
from memswarm_es.timetravel import TimeMachine


def build(log: SQLEventLog, events: int, memories: int, batch: int = 2000) -> None:
    """Append ``events`` events over a live set of ``memories`` memories."""
    rng = random.Random(7)
    versions: dict[str, int] = {}
    live: list[str] = []
    pending: list[NewEvent] = []
    next_id = 0
    for i in range(events):
        if len(live) < memories:
            memory_id, next_id = f"m{next_id:08d}", next_id + 1
            agent = f"agent-{rng.randrange(50)}"
            versions[memory_id] = 1
            live.append(memory_id)
            new = NewEvent.create(EventType.MEMORY_WRITTEN, Scope(agent, f"g{i % 7}"), agent,
                                  {"value": f"note {i}", "metadata": {"i": i}},
                                  memory_id=memory_id, version=1)
        else:
            slot = rng.randrange(len(live))
            memory_id = live[slot]
            versions[memory_id] += 1
            kind = EventType.MEMORY_DELETED if i % 50 == 0 else EventType.MEMORY_UPDATED
            data = {} if kind == EventType.MEMORY_DELETED else {"value": f"note {i}"}
            new = NewEvent.create(kind, Scope(f"agent-{int(memory_id[1:]) % 50}", None), "bench",
                                  data, memory_id=memory_id, version=versions[memory_id])
            if kind == EventType.MEMORY_DELETED:
                live[slot] = live[-1]
                live.pop()
        pending.append(new)
        if len(pending) == batch:
            log.append(pending)
            pending = []
    if pending:
        log.append(pending)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--memories", type=int, default=10_000, help="size of the live set")
    parser.add_argument("--every", type=int, nargs="+", default=[5_000, 20_000, 100_000],
                        help="snapshot intervals to measure")
    parser.add_argument("--queries", type=int, default=20, help="as_of calls per interval")
    parser.add_argument("--baseline-queries", type=int, default=3,
                        help="as_of calls folding from 0 (slow)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        log = SQLEventLog(f"sqlite:///{os.path.join(tmp, 'tt.db')}", synchronous="OFF")
        print(f"building {args.events:,} events over {args.memories:,} live memories...",
              flush=True)
        build_seconds = timed(lambda: build(log, args.events, args.memories))
        head = log.head()
        rng = random.Random(11)
        positions = [rng.randrange(head // 2, head + 1) for _ in range(args.queries)]
        store = snapshot_store_for(log)
        store.delete_from(0)
        baseline = [timed(partial(TimeMachine(log, store, every=head + 1).at, p)) * 1000
                    for p in positions[:args.baseline_queries]]
        base_p50 = statistics.median(baseline)
        rows: list[list[Cell]] = [["fold from position 0 (peer)", "-", "-", base_p50,
                                   max(baseline), 1.0]]
        for every in args.every:
            store.delete_from(0)
            machine = TimeMachine(log, store, every=every)
            first = timed(partial(machine.at, head))  # walks the log, saving snapshots
            samples = [timed(partial(machine.at, p)) * 1000 for p in positions]
            p50 = statistics.median(samples)
            rows.append([f"snapshots every {every:,}", f"{first:.1f} s", head // every, p50,
                         percentile(samples, 99), base_p50 / p50])
        log.close()

    print_table(f"as_of on a SQLite log of {head:,} events ({args.memories:,} live memories; "
                f"built in {build_seconds:.0f} s)",
                ["method", "first walk", "snapshots", "p50 ms", "max/p99 ms", "speed-up x"],
                rows, decimals=[0, 0, 0, 1, 1, 0])


if __name__ == "__main__":
    main()
