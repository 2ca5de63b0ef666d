#!/usr/bin/env python3
"""Benchmark the SQLite event log: appends, replay and scoped reads, against raw sqlite3.

    python3 scripts/dev.py run python scripts/bench_log.py [--events 100000] [--single 5000]

Prints a table. The peer is plain ``sqlite3`` ``executemany`` of the same rows into a table with
the same columns and indexes, in one transaction, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import threading
from collections.abc import Sequence
from functools import partial

from benchtable import print_table, ratio
from benchtime import latencies, percentile, timed

from memswarm_es import SQLiteSharedMemory
from memswarm_es.events import EventType, NewEvent
from memswarm_es.log import EventLog, SQLEventLog
from memswarm_es.log.sql import _row
from memswarm_es.scopes import Scope
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector

AGENTS = 100
HOT_AGENT_MEMORIES = 1000


def new_events(count: int) -> list[NewEvent]:
    """``count`` writes; agent ``hot`` owns the first 1k, the rest spread over 100 agents."""
    out = []
    for i in range(count):
        agent = "hot" if i < HOT_AGENT_MEMORIES else f"agent-{i % AGENTS}"
        out.append(NewEvent.create(
            EventType.MEMORY_WRITTEN, Scope(agent, f"group-{i % 10}", f"ctx-{i % 37}"), agent,
            {"value": f"observation number {i} about the world", "metadata": {"n": i}},
            memory_id=f"m{i:09d}", version=1))
    return out


def append_all(log: EventLog, batches: Sequence[Sequence[NewEvent]]) -> None:
    """Append each of ``batches`` to ``log`` in its own transaction."""
    for batch in batches:
        log.append(batch)


def one_at_a_time(events: Sequence[NewEvent]) -> list[list[NewEvent]]:
    """``events`` as batches of one."""
    return [[e] for e in events]


def run_all(threads: Sequence[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def raw_sqlite(path: str, rows: list[dict[str, object]]) -> float:
    """The peer: the same rows, same schema and keys (the log's index by scope is a table
    beside it that appends never write), one executemany in one transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE events (position INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
        " type TEXT NOT NULL, agent_id TEXT, group_id TEXT, context_id TEXT, actor TEXT NOT NULL,"
        " memory_id TEXT, version INTEGER, recorded_at BIGINT NOT NULL, schema SMALLINT NOT NULL,"
        " payload BLOB, payload_hash BLOB NOT NULL, hash BLOB NOT NULL,"
        " UNIQUE (memory_id, version))")
    columns = list(rows[0])
    sql = (f"INSERT INTO events ({', '.join(columns)}) "
           f"VALUES ({', '.join(':' + c for c in columns)})")

    def load() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")

    seconds = timed(load)
    conn.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events for batched/replay")
    parser.add_argument("--batch", type=int, default=1000, help="events per batched append")
    parser.add_argument("--single", type=int, default=5000, help="single appends to time")
    parser.add_argument("--threads", type=int, default=8, help="concurrent appending threads")
    parser.add_argument("--reads", type=int, default=1000, help="read_scope calls to time")
    args = parser.parse_args()
    if args.events < HOT_AGENT_MEMORIES:
        parser.error(f"--events must be at least {HOT_AGENT_MEMORIES}")

    with tempfile.TemporaryDirectory() as tmp:
        events = new_events(args.events)
        rows_out: list[tuple[str, int, float, str]] = []

        log = SQLEventLog(f"sqlite:///{os.path.join(tmp, 'batched.db')}")
        chunks = [events[i:i + args.batch] for i in range(0, len(events), args.batch)]
        seconds = timed(partial(append_all, log, chunks))
        rows_out.append((f"append, batches of {args.batch}", args.events,
                         args.events / seconds, "events/s"))
        recorded = log.read()
        raw_seconds = raw_sqlite(os.path.join(tmp, "raw.db"), [_row(e) for e in recorded])
        rows_out.append(("raw sqlite3 executemany (peer)", args.events,
                         args.events / raw_seconds, "events/s"))
        batched_ratio = raw_seconds / seconds

        model = InMemoryReadModel()
        seconds = timed(Projector(log, model, batch_size=5000).catch_up)
        rows_out.append(("replay into in-memory model", args.events, args.events / seconds,
                         "events/s"))
        replay_rate = args.events / seconds

        single = {}
        for sync in ("FULL", "NORMAL"):
            one = SQLEventLog(f"sqlite:///{os.path.join(tmp, f'single-{sync}.db')}",
                              synchronous=sync)
            seconds = timed(partial(append_all, one, one_at_a_time(events[:args.single])))
            single[sync] = args.single / seconds
            rows_out.append((f"append one at a time, synchronous={sync}", args.single,
                             single[sync], "events/s"))
            one.close()
        shared = SQLEventLog(f"sqlite:///{os.path.join(tmp, 'threads.db')}")
        per_thread = args.single // args.threads
        work = [events[i * per_thread:(i + 1) * per_thread] for i in range(args.threads)]
        threads = [threading.Thread(target=append_all, args=(shared, one_at_a_time(mine)))
                   for mine in work]
        seconds = timed(partial(run_all, threads))
        grouped = per_thread * args.threads / seconds
        rows_out.append((f"append one at a time, {args.threads} threads, FULL", per_thread *
                         args.threads, grouped, "events/s"))
        shared.close()
        log.close()

        mem = SQLiteSharedMemory(os.path.join(tmp, "batched.db"))
        assert len(mem.read_scope(agent_id="hot")) == HOT_AGENT_MEMORIES
        samples = latencies(lambda: mem.read_scope(agent_id="hot"), args.reads)
        rows_out.append(("read_scope(agent_id) of 1k memories, p50", args.reads,
                         percentile(samples, 50), "ms"))
        rows_out.append(("read_scope(agent_id) of 1k memories, p99", args.reads,
                         percentile(samples, 99), "ms"))
        mem.close()

    print_table(
        f"MemSwarm SQLite log, {args.events:,} events (WAL, synchronous=FULL unless said)",
        ["measure", "n", "rate / time", "unit"], rows_out, notes=[
            ratio("batched append / raw sqlite3 executemany", batched_ratio),
            ratio("replay into the in-memory model / raw executemany",
                  replay_rate * raw_seconds / args.events),
            ratio("single appends, synchronous=NORMAL / FULL", single["NORMAL"] / single["FULL"]),
            ratio(f"single appends, {args.threads} threads (group commit) / 1 thread, FULL",
                  grouped / single["FULL"])])


if __name__ == "__main__":
    main()
