#!/usr/bin/env python3
"""Benchmark MemSwarmStore against LangGraph's own stores, in one run (issue #14).

    python3 scripts/dev.py run python scripts/bench_langgraph.py [--items 10000 100000]

For each size: ``--items`` puts of ~100-byte values, one put per call, into 100 namespaces
``("users", "u<n>")``; then ``--gets`` gets of random items and ``--searches`` prefix searches of
a random namespace (LangGraph's default ``limit=10``). Against ``InMemoryStore`` and
``SqliteStore`` (WAL, ``synchronous=NORMAL``); MemSwarm is ``MemSwarmStore`` over a
``SQLiteSharedMemory`` (log and SQL view in one file, the view folded at the next read) and
over a SQLite log read through this process's in-memory view
(``from_conn_string(..., read_model="memory://")``), both at the same ``synchronous=NORMAL``,
and over ``InMemorySharedMemory`` (log and view in this process, as ``InMemoryStore`` is).
Prints one table per size with the rates and MemSwarm's ratio to each peer (goal: above 1x
SqliteStore on every row; get and search at least 0.5x InMemoryStore). Prints; never asserts.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
from collections.abc import Callable

from benchtable import Cell, print_table
from benchtime import timed
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from langgraph.store.sqlite import SqliteStore

from memswarm_es import InMemorySharedMemory, SharedMemory, SQLiteSharedMemory
from memswarm_es.integrations.langgraph import MemSwarmStore
from memswarm_es.log import SQLEventLog
from projections.in_memory import InMemoryReadModel

NAMESPACES = 100
SQL_VIEW = "MemSwarmStore, SQL view"
MEMORY_VIEW = "MemSwarmStore, memory view"
IN_PROCESS = "MemSwarmStore, in process"


def _value(i: int) -> dict[str, object]:
    return {"text": f"memory number {i} about something worth remembering", "n": i % 10,
            "kind": "fact"}


def measure(store: BaseStore, items: int, gets: int, searches: int) -> list[float]:
    """Puts, gets and searches per second on ``store``."""
    rng = random.Random(7)
    addresses = [(("users", f"u{i % NAMESPACES}"), f"k{i}") for i in range(items)]

    def put() -> None:
        for i, (namespace, key) in enumerate(addresses):
            store.put(namespace, key, _value(i))

    def get() -> None:
        for namespace, key in rng.sample(addresses, gets):
            assert store.get(namespace, key) is not None

    def search() -> None:
        for _ in range(searches):
            assert len(store.search(("users", f"u{rng.randrange(NAMESPACES)}"))) == 10

    return [items / timed(put), gets / timed(get), searches / timed(search)]


def run(items: int, gets: int, searches: int, directory: str) -> None:
    conn = sqlite3.connect(f"{directory}/langgraph-{items}.db", check_same_thread=False,
                           isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    sqlite_store = SqliteStore(conn)
    sqlite_store.setup()
    swarm = SQLiteSharedMemory(f"{directory}/memswarm-{items}.db", synchronous="NORMAL")
    cached = SharedMemory(SQLEventLog(f"sqlite:///{directory}/memswarm-mem-{items}.db",
                                      synchronous="NORMAL"), InMemoryReadModel())
    stores: list[tuple[str, Callable[[], BaseStore]]] = [
        ("InMemoryStore", InMemoryStore), ("SqliteStore", lambda: sqlite_store),
        (SQL_VIEW, lambda: MemSwarmStore(swarm)), (MEMORY_VIEW, lambda: MemSwarmStore(cached)),
        (IN_PROCESS, lambda: MemSwarmStore(InMemorySharedMemory()))]
    rates = {name: measure(make(), items, gets, searches) for name, make in stores}
    conn.close()
    swarm.close()
    cached.close()
    ours = (SQL_VIEW, MEMORY_VIEW, IN_PROCESS)
    rows: list[list[Cell]] = []
    for i, name in enumerate(["put/s", "get/s", "search/s (limit 10)"]):
        row: list[Cell] = [name, rates["InMemoryStore"][i], rates["SqliteStore"][i]]
        for store in ours:
            rate = rates[store][i]
            row += [rate, f"{rate / rates['SqliteStore'][i]:.2f}x",
                    f"{rate / rates['InMemoryStore'][i]:.2f}x"]
        rows.append(row)
    print_table(f"LangGraph stores, {items:,} items in {NAMESPACES} namespaces",
                ["measure", "InMemoryStore", "SqliteStore"]
                + [h for store in ours for h in (store, "vs SqliteStore", "vs InMemoryStore")],
                rows, decimals=[0] * (2 + 3 * len(ours)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--gets", type=int, default=5000)
    parser.add_argument("--searches", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for items in args.items:
            run(items, min(args.gets, items), args.searches, directory)


if __name__ == "__main__":
    main()
