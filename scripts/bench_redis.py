#!/usr/bin/env python3
"""Benchmark the Redis read model: pipelined projection and scoped reads, against
``redis-benchmark -P 16`` SET throughput on the same server as the ceiling.

    python3 scripts/dev.py run python scripts/bench_redis.py [--memories 100000]

Starts its own ``redis-server`` on a free loopback port (no persistence) and stops it after, so
nothing else's data is touched and nothing else competes. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_log import HOT_AGENT_MEMORIES, new_events  # noqa: E402 - same workload
from benchtable import print_table, ratio  # noqa: E402
from benchtime import latencies, percentile, timed  # noqa: E402

from memswarm_es.log import InProcessLog  # noqa: E402
from memswarm_es.scopes import Scope  # noqa: E402
from projections.in_memory import InMemoryReadModel  # noqa: E402
from projections.projector import Projector  # noqa: E402
from projections.redis import RedisReadModel  # noqa: E402
from tests.servers_redis import RedisServer  # noqa: E402

#: HSET of the entry, ZADD into all, into the three scope indexes, into own:agent and own:group
WRITES_PER_EVENT = 7


def set_ceiling(port: int, requests: int) -> float:
    """SET requests/s of ``redis-benchmark -P 16`` (50 clients) against the server."""
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-n",
         str(requests), "-P", "16", "--csv"], capture_output=True, text=True, check=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    header = rows[0]
    (row,) = [r for r in rows[1:] if r and r[0] == "SET"]
    return float(row[header.index("rps")])


def script_usec(client: redis.Redis) -> int:
    """Microseconds the server has spent running scripts (EVALSHA) so far."""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in ("evalsha", "eval"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=100_000, help="memories projected")
    parser.add_argument("--batch", type=int, default=1000, help="events per commit")
    parser.add_argument("--reads", type=int, default=500, help="read_scope calls per scope")
    parser.add_argument("--set-requests", type=int, default=2_000_000,
                        help="requests for redis-benchmark")
    args = parser.parse_args()
    if args.memories < HOT_AGENT_MEMORIES * 10:
        parser.error(f"--memories must be at least {HOT_AGENT_MEMORIES * 10}")
    if shutil.which("redis-server") is None or shutil.which("redis-benchmark") is None:
        parser.error("redis-server and redis-benchmark must be installed")

    log = InProcessLog()
    events = new_events(args.memories)
    for start in range(0, len(events), 10_000):
        log.append(events[start:start + 10_000])

    rows: list[tuple[str, int, float, str]] = []
    server = RedisServer()
    try:
        ceiling = set_ceiling(server.port, args.set_requests)
        rows.append(("redis-benchmark SET, -P 16 (ceiling)", args.set_requests, ceiling,
                     "SET/s"))

        model = RedisReadModel(server.url, prefix="bench")
        before = script_usec(model.client)
        seconds = timed(lambda: Projector(log, model, args.batch).catch_up())
        busy = (script_usec(model.client) - before) / 1e6 / seconds
        projected = args.memories / seconds
        rows.append((f"project into Redis, batches of {args.batch}", args.memories,
                     projected, "events/s"))
        rows.append(("  = Redis writes inside the projection", args.memories *
                     WRITES_PER_EVENT, projected * WRITES_PER_EVENT, "writes/s"))
        reference = InMemoryReadModel()
        seconds = timed(lambda: Projector(log, reference, args.batch).catch_up())
        rows.append(("project into the in-memory model (peer)", args.memories,
                     args.memories / seconds, "events/s"))

        scopes = [("agent_id (1k memories)", Scope("hot")),
                  ("group_id + context_id", Scope(None, "group-3", "ctx-5")),
                  ("context_id", Scope(context_id="ctx-5"))]
        for name, scope in scopes:
            size = len(model.read_scope(scope))
            assert model.read_scope(scope) == reference.read_scope(scope)
            samples = latencies(partial(model.read_scope, scope), args.reads)
            rows.append((f"read_scope {name}: {size}, p50", args.reads,
                         percentile(samples, 50), "ms"))
            rows.append((f"read_scope {name}: {size}, p99", args.reads,
                         percentile(samples, 99), "ms"))
        hot = Scope("hot")
        samples = latencies(lambda: reference.read_scope(hot), args.reads)
        rows.append(("in-memory read_scope agent_id (peer), p50", args.reads,
                     percentile(samples, 50), "ms"))

        async def async_reads() -> list[float]:
            out = []
            for _ in range(args.reads):
                start = time.perf_counter()
                await model.read_scope_async(hot)
                out.append((time.perf_counter() - start) * 1000)
            await model.aclose()
            return out

        samples = asyncio.run(async_reads())
        rows.append(("read_scope_async agent_id (1k), p50", args.reads,
                     percentile(samples, 50), "ms"))
        rows.append(("read_scope_async agent_id (1k), p99", args.reads,
                     percentile(samples, 99), "ms"))
        memory = redis.Redis(port=server.port).info("memory")["used_memory_human"]
        model.close()
    finally:
        server.close()

    print_table(f"MemSwarm Redis read model, {args.memories:,} memories "
                f"(own redis-server on loopback, {memory} used)",
                ["measure", "n", "rate / time", "unit"], rows, notes=[
                    ratio("projected events/s / redis-benchmark SET/s", projected / ceiling, 3),
                    ratio("Redis writes/s while projecting / redis-benchmark SET/s",
                          projected * WRITES_PER_EVENT / ceiling),
                    f"Redis busy running the projection's scripts: {busy:.0%} of its time "
                    "(the rest: reading the log and folding in Python)"])


if __name__ == "__main__":
    main()
