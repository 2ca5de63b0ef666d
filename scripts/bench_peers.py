#!/usr/bin/env python3
"""Benchmark MemSwarm against its peers on the same memories, in one process (issue #13).

    python3 scripts/dev.py run python scripts/bench_peers.py [--events 100000] [--quick]

The memories: ``--events`` writes of ~190-byte msgpack content (a sentence and four metadata
fields), 1k per agent (``agent-<n>``, taking turns), each agent in one of 10 groups, 500
contexts. MemSwarm and each peer get the same memories (same ids, same content):

- eventsourcing (``SQLiteApplicationRecorder``): one aggregate per memory, its state the
  msgpack of the content and the scope; ``insert_events`` and ``select_notifications``;
- raw ``sqlite3``: the same rows MemSwarm recorded, into an empty MemSwarm database (the same
  table and indexes), one row per transaction; for reads, a table of live memories indexed by
  agent, read and msgpack-decoded;
- LangGraph: ``InMemoryStore`` and ``SqliteStore`` (WAL), the content and the scope as the
  value, under the namespace ``("memories", agent)``;
- redis-py: the events projected naively, a pipeline per 1k events of ``HSET`` (the payload)
  and ``ZADD`` into each of the memory's three scope indexes.

Prints one table: per measure the peer's figure, MemSwarm's, their ratio, the issue's goal and
PASS or MISS. Peers run at SQLite's default ``synchronous=FULL`` unless a measure says NORMAL.
Redis is the one at ``MEMSWARM_REDIS_URL`` (else ``redis://127.0.0.1:6379/0``): keys go under a
prefix of this run's own, deleted after; with no Redis there, the row says n/a. The SQL read
model row says n/a while MemSwarm has none (``open_read_model("sqlite:///...")`` refuses).
The single writes run in three rounds, MemSwarm and raw ``sqlite3`` in turn on new files, each
side's median reported. Every measure does a fixed amount of work (``--single``, ``--reads``,
``--as-of``), and the ``as_of`` calls stop at ``--as-of-budget`` seconds, so each is bounded
in time; ``--quick`` is a smoke run of well under a minute. Prints; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgpack
import redis
from bench_log import append_all
from benchtable import Cell, print_table
from benchtime import latencies, percentile, timed
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from langgraph.store.base import PutOp
from langgraph.store.memory import InMemoryStore
from langgraph.store.sqlite import SqliteStore

from memswarm_es import SharedMemory, SQLiteSharedMemory
from memswarm_es.errors import InvalidInputError
from memswarm_es.events import Event, EventType, NewEvent, new_id
from memswarm_es.log import EventFilter, InMemoryEventLog, SQLEventLog
from memswarm_es.log.sql import _row
from memswarm_es.scopes import Scope
from projections import open_read_model
from projections.base import ReadModel
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector
from projections.redis import RedisReadModel
from projections.sql import kept_view

PER_AGENT = 1000
GROUPS = 10
CONTEXTS = 500
BATCH = 100  # events per batched append
PAGE = 1000  # events per page read (replay) and per Redis commit or pipeline
ROUNDS = 3  # single-write rounds, each side in turn: the median of each side is reported
READER = "agent-0"  # whose 1k memories the reads fetch
TOPIC = "memswarm:MemoryWritten"  # the eventsourcing topic of a memory written

# Run in a fresh process: the time until a new SQLiteSharedMemory answers its first read, and
# the resident memory then (imports included, the time of importing excluded).
_OPEN_PROBE = """
import json, sys, time
from memswarm_es import SQLiteSharedMemory
start = time.perf_counter()
memory = SQLiteSharedMemory(sys.argv[1])
found = len(memory.read_scope(agent_id=sys.argv[2]))
seconds = time.perf_counter() - start
with open("/proc/self/status") as status:
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
print(json.dumps({"seconds": seconds, "rss_mb": rss / 1024, "found": found}))
"""


@dataclass(frozen=True)
class Memory:
    """One generated memory, as every store gets it."""

    memory_id: uuid.UUID
    agent_id: str
    group_id: str
    context_id: str
    content: dict[str, Any]  # {"value": ..., "metadata": {...}}

    @property
    def record(self) -> dict[str, Any]:
        """What a peer without scope columns stores: the content and the scope."""
        return {**self.content, "agent_id": self.agent_id, "group_id": self.group_id,
                "context_id": self.context_id}

    def new_event(self) -> NewEvent:
        """MemSwarm's event for this memory, as ``write_scope`` makes it."""
        return NewEvent.create(EventType.MEMORY_WRITTEN,
                               Scope(self.agent_id, self.group_id, self.context_id),
                               self.agent_id, self.content, memory_id=str(self.memory_id),
                               version=1, event_id=str(self.memory_id))

    def stored_event(self) -> StoredEvent:
        """eventsourcing's event for this memory: a new aggregate, at version 1."""
        return StoredEvent(originator_id=self.memory_id, originator_version=1, topic=TOPIC,
                           state=msgpack.packb(self.record))


def memories(count: int) -> list[Memory]:
    """``count`` memories, 1k per agent: agents take turns, so an agent's memories are spread
    through the log; an agent's group is fixed, contexts go round."""
    agents = max(1, count // PER_AGENT)
    return [memory(i, agents) for i in range(count)]


def memory(i: int, agents: int) -> Memory:
    """The ``i``-th memory of a run with ``agents`` agents (see :func:`memories`)."""
    a = i % agents
    return Memory(uuid.UUID(new_id()), f"agent-{a}", f"group-{a % GROUPS}", f"ctx-{i % CONTEXTS}", {
        "value": f"Observation {i:07d} by agent-{a}: the bridge on route {i % 97} is "
                 f"closed; a detour via route {i * 7 % 89} adds about {i % 40 + 5} minutes.",
        "metadata": {"source": "sensor", "confidence": 0.5 + i % 50 / 100,
                     "tags": ["route", "traffic"], "n": i}})


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(frozen=True)
class Measure:
    """One row: MemSwarm's figure against a peer's (``None``: not measured, printed n/a) and
    the issue's goal, on the ratio MemSwarm / peer (``at_least`` for rates, ``at_most`` for
    latencies) or, without a peer, on MemSwarm's own figure (``under``)."""

    name: str
    unit: str
    peer: str
    peer_figure: float | None
    ours: float | None
    at_least: float | None = None
    at_most: float | None = None
    under: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.peer_figure:
            return None
        return self.ours / self.peer_figure

    def goal(self) -> str:
        if self.at_least is not None:
            return f">= {self.at_least:.2f}x"
        if self.at_most is not None:
            return f"<= {self.at_most:.2f}x"
        if self.under is not None:
            return f"< {self.under:g} {self.unit}"
        return "-"

    def result(self) -> str:
        if self.goal() == "-":
            return "-"
        if self.ours is None or (self.under is None and self.ratio is None):
            return "n/a"
        if self.at_least is not None:
            met = self.ratio is not None and self.ratio >= self.at_least
        elif self.at_most is not None:
            met = self.ratio is not None and self.ratio <= self.at_most
        else:
            met = self.under is not None and self.ours < self.under
        return "PASS" if met else "MISS"

    def cells(self) -> list[Cell]:
        ratio = self.ratio
        return [self.name, self.unit, self.peer, _figure(self.peer_figure, self.unit),
                _figure(self.ours, self.unit), "-" if ratio is None else ratio, self.goal(),
                self.result()]


def _figure(value: float | None, unit: str) -> Cell:
    """Rates and sizes as whole numbers, times with their decimals."""
    if value is None:
        return "n/a"
    return round(value) if unit.endswith("/s") or unit == "MB" else value


# --- the peers ---------------------------------------------------------------------------------


def es_recorder(path: str) -> SQLiteApplicationRecorder:
    """eventsourcing's recorder of application events in a new SQLite file (WAL)."""
    recorder = SQLiteApplicationRecorder(SQLiteDatastore(path))
    recorder.create_table()
    return recorder


def es_insert(recorder: SQLiteApplicationRecorder, batches: Sequence[Sequence[StoredEvent]]
              ) -> None:
    for batch in batches:
        recorder.insert_events(batch)


def es_read_all(recorder: SQLiteApplicationRecorder) -> None:
    """Read every notification, a page at a time."""
    start = 1
    while page := recorder.select_notifications(start, PAGE):
        start = page[-1].id + 1


def raw_one_per_transaction(path: str, sync: str, rows: Sequence[dict[str, object]]) -> float:
    """Rows/s of plain ``sqlite3`` writing ``rows`` into an empty MemSwarm log's table (the
    same columns and indexes), one ``BEGIN IMMEDIATE ... COMMIT`` each."""
    log = SQLEventLog(f"sqlite:///{path}")  # makes the tables, and nothing else
    table = f"{log.table_prefix}events"
    log.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync}")
    columns = list(rows[0])
    sql = (f"INSERT INTO {table} ({', '.join(columns)}) "
           f"VALUES ({', '.join(':' + c for c in columns)})")

    def write() -> None:
        for row in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, row)
            conn.execute("COMMIT")

    seconds = timed(write)
    conn.close()
    return len(rows) / seconds


def langgraph_sqlite_puts(path: str, mine: Sequence[Memory]) -> float:
    """Puts/s of LangGraph's ``SqliteStore`` (WAL, synchronous=NORMAL), one put each."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    store = SqliteStore(conn)
    store.setup()

    def put() -> None:
        for m in mine:
            store.put(("memories", m.agent_id), str(m.memory_id), m.record)

    seconds = timed(put)
    conn.close()
    return len(mine) / seconds


def raw_read_table(path: str, all_memories: Sequence[Memory]) -> sqlite3.Connection:
    """A plain table of the live memories (scope columns, position, msgpack content) indexed
    by agent, as a hand-written SQL view would keep them."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE memories (memory_id TEXT PRIMARY KEY, agent_id TEXT, "
                 "group_id TEXT, context_id TEXT, position INTEGER, payload BLOB)")
    conn.execute("CREATE INDEX memories_agent ON memories (agent_id, position)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO memories VALUES (?, ?, ?, ?, ?, ?)", (
        (str(m.memory_id), m.agent_id, m.group_id, m.context_id, i, msgpack.packb(m.content))
        for i, m in enumerate(all_memories, 1)))
    conn.execute("COMMIT")
    return conn


def raw_read(conn: sqlite3.Connection, agent_id: str) -> list[dict[str, Any]]:
    """One agent's memories in order, decoded."""
    rows = conn.execute("SELECT memory_id, payload FROM memories WHERE agent_id = ? "
                        "ORDER BY position", (agent_id,))
    return [{"memory_id": memory_id, **msgpack.unpackb(payload)} for memory_id, payload in rows]


def naive_redis(client: redis.Redis, prefix: str, events: Sequence[Event]) -> float:
    """Events/s of a pipeline per page: ``HSET`` the payload, ``ZADD`` the id into the
    memory's agent, group and context indexes by position."""
    def project() -> None:
        for page in chunks(events, PAGE):
            pipe = client.pipeline(transaction=False)
            for e in page:
                pipe.hset(f"{prefix}:mem", e.memory_id, e.body or b"")
                for part, value in e.scope.parts():
                    pipe.zadd(f"{prefix}:{part}:{value}", {e.memory_id: e.position})
            pipe.execute()

    return len(events) / timed(project)


def delete_keys(client: redis.Redis, prefix: str) -> None:
    """Delete the keys under ``prefix`` (this run's own) and no others."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


# --- MemSwarm ----------------------------------------------------------------------------------


def open_in_new_process(path: str) -> dict[str, float]:
    """``seconds`` until a new process's SQLiteSharedMemory answered its first read, and its
    ``rss_mb`` then."""
    out = subprocess.run([sys.executable, "-c", _OPEN_PROBE, path, READER], check=True,
                         capture_output=True, text=True).stdout
    found: dict[str, float] = json.loads(out)
    return found


def sql_read_model(path: str) -> ReadModel | None:
    """MemSwarm's read model in the log's own SQLite database, if this version has one."""
    try:
        return open_read_model(f"sql+sqlite:///{path}")
    except InvalidInputError:
        return None


def redis_url() -> str:
    return os.environ.get("MEMSWARM_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def p50(fn: Callable[[], object], calls: int) -> float:
    """The median milliseconds of ``calls`` calls of ``fn()``."""
    return percentile(latencies(fn, calls), 50)


# --- the run -----------------------------------------------------------------------------------


class Run:
    """One run's memories, files and measures; its phases share the log they build."""

    memory: SharedMemory  # the log built, its in-memory view replayed (``appends``)
    recorded: list[Event]  # the log's events

    def __init__(self, args: argparse.Namespace, tmp: str) -> None:
        self.args = args
        self.tmp = tmp
        self.memories = memories(args.events)
        self.expected = sum(m.agent_id == READER for m in self.memories)
        self.rows: list[Measure] = []
        self.notes: list[str] = []

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, f"{name}.db")

    def appends(self) -> None:
        """Batched appends (building the log the other phases read), then opening it in a new
        process, then replaying it here into the in-memory model."""
        progress(f"{self.args.events:,} memories: batched appends")
        batches = list(chunks([m.new_event() for m in self.memories], BATCH))
        log = SQLEventLog(f"sqlite:///{self.path('log')}")  # as SQLiteSharedMemory appends
        ours = self.args.events / timed(partial(append_all, log, batches))
        log.close()
        progress("the first read, folding the SQL view")
        with SQLiteSharedMemory(self.path("log")) as memory:
            folded = self.args.events / timed(partial(memory.read_scope, agent_id=READER))
            progress("the first scoped query of the log, filling its scope index")
            indexed = self.args.events / timed(partial(
                memory.log.query, EventFilter(Scope(READER)), limit=1))
        kept = SQLEventLog(f"sqlite:///{self.path('kept')}")
        kept_view(kept)  # view_upkeep="append": the view kept inside every append
        in_appends = self.args.events / timed(partial(append_all, kept, batches))
        kept.close()
        del batches
        recorder = es_recorder(self.path("es"))
        stored = list(chunks([m.stored_event() for m in self.memories], BATCH))
        peer = self.args.events / timed(partial(es_insert, recorder, stored))
        del stored
        self.rows.append(Measure(f"batched append ({BATCH} per batch), SQLiteSharedMemory's log",
                                 "events/s", "eventsourcing insert_events", peer, ours,
                                 at_least=1.0))
        self.rows.append(Measure("  then the first read folds them into the SQL view",
                                 "events/s", "eventsourcing insert_events", peer, folded))
        self.rows.append(Measure("  then the first scoped query of the log indexes them",
                                 "events/s", "eventsourcing insert_events", peer, indexed))
        self.rows.append(Measure('  the view kept inside every append (view_upkeep="append")',
                                 "events/s", "eventsourcing insert_events", peer, in_appends))

        progress("open in a new process")
        opened = open_in_new_process(self.path("log"))
        self.rows.append(Measure(
            f"open SQLiteSharedMemory, to its first read ({opened['found']:,.0f})", "s", "-",
            None, opened["seconds"], under=0.5))
        self.rows.append(Measure("  resident memory after open", "MB", "-", None,
                                 opened["rss_mb"], under=200))

        progress("replay")
        # The peer first, before the in-memory model fills the heap: its reads would otherwise
        # pay for the cyclic collector walking MemSwarm's entries (the projector pauses it).
        peer = self.args.events / timed(partial(es_read_all, recorder))
        recorder.datastore.close()
        log = SQLEventLog(f"sqlite:///{self.path('log')}", create=False)
        model = InMemoryReadModel()
        ours = self.args.events / timed(Projector(log, model, PAGE).catch_up)
        self.rows.append(Measure("replay into the in-memory model", "events/s",
                                 "eventsourcing select_notifications (read only)", peer, ours,
                                 at_least=0.75))
        self.memory = SharedMemory(log, model)  # reads through the facade, from that model
        self.recorded = log.read()

    def single_writes(self) -> None:
        """``write_scope`` one at a time into new logs, at FULL and at NORMAL: :data:`ROUNDS`
        rounds, MemSwarm and raw ``sqlite3`` in turn on new files each round, and each side's
        median (a few thousand writes last under a second, at the mercy of the disk and of
        other processes for a moment)."""
        progress(f"{self.args.single:,} single writes per store, {ROUNDS} rounds")
        mine = self.memories[:self.args.single]
        raw_rows = [_row(e) for e in self.recorded[:self.args.single]]
        for sync, goal in (("FULL", 0.6), ("NORMAL", 0.5)):
            rounds = [self.single_round(sync, n, mine, raw_rows) for n in range(ROUNDS)]
            ours, peer, folded, kept = (statistics.median(side)
                                        for side in zip(*rounds, strict=True))
            self.rows.append(Measure(f"write_scope, synchronous={sync}", "writes/s",
                                     "raw sqlite3, 1 row per transaction", peer, ours,
                                     at_least=goal))
            self.rows.append(Measure("  with the next read's fold of them into the view",
                                     "writes/s", "raw sqlite3, 1 row per transaction", peer,
                                     folded))
            self.rows.append(Measure('  the view kept inside every append (view_upkeep="append")',
                                     "writes/s", "raw sqlite3, 1 row per transaction", peer,
                                     kept))
            if sync == "FULL":
                recorder = es_recorder(self.path("es-single"))
                peer = len(mine) / timed(partial(es_insert, recorder,
                                                 [[m.stored_event()] for m in mine]))
                recorder.datastore.close()
                self.rows.append(Measure("  the same", "writes/s",
                                         "eventsourcing insert_events, 1 per transaction",
                                         peer, ours))
            else:
                peer = langgraph_sqlite_puts(self.path("langgraph"), mine)
                self.rows.append(Measure("  the same", "writes/s",
                                         "LangGraph SqliteStore.put (WAL)", peer, ours))

    def single_round(self, sync: str, n: int, mine: Sequence[Memory],
                     raw_rows: Sequence[dict[str, object]]) -> tuple[float, float, float, float]:
        """One round of :meth:`single_writes`, writes/s: ``write_scope``, raw ``sqlite3``,
        ``write_scope`` with the next read's fold, and with the view kept in every append."""
        with SQLiteSharedMemory(self.path(f"single-{sync}-{n}"), synchronous=sync) as single:
            writing = timed(partial(write_each, single, mine))
            folding = timed(partial(single.read_scope, agent_id=READER))
        peer = raw_one_per_transaction(self.path(f"raw-{sync}-{n}"), sync, raw_rows)
        with SQLiteSharedMemory(self.path(f"single-{sync}-kept-{n}"), synchronous=sync,
                                view_upkeep="append") as single:
            kept = len(mine) / timed(partial(write_each, single, mine))
        return len(mine) / writing, peer, len(mine) / (writing + folding), kept

    def reads(self) -> None:
        """One agent's memories, again and again: from the in-memory model (as the operator
        and as the agent) and from the SQL read model if there is one. Each side's answer is
        counted into its row: a wrong answer shows there."""
        calls, expected = self.args.reads, self.expected
        progress(f"{calls:,} reads of {expected:,} memories")
        store = InMemoryStore()
        for page in chunks(self.memories, 10_000):
            store.batch([PutOp(("memories", m.agent_id), str(m.memory_id), m.record)
                         for m in page])
        search = partial(store.search, ("memories", READER), limit=expected)
        peer_name = f"LangGraph InMemoryStore.search: {len(search()):,}"
        peer = p50(search, calls)
        del store, search
        read = partial(self.memory.read_scope, agent_id=READER)
        self.rows.append(Measure(f"read_scope of {len(read()):,}, in-memory, p50", "ms",
                                 peer_name, peer, p50(read, calls), at_most=0.5))
        read = partial(self.memory.agent(READER).read_scope, agent_id=READER)
        self.rows.append(Measure(f"  the same, read as the agent itself: {len(read()):,}",
                                 "ms", peer_name, peer, p50(read, calls)))

        conn = raw_read_table(self.path("raw-read"), self.memories)
        peer_name = f"raw sqlite3 read + msgpack decode: {len(raw_read(conn, READER)):,}"
        peer = p50(partial(raw_read, conn, READER), calls)
        conn.close()
        name = "read_scope from the SQL read model, p50"
        model = sql_read_model(self.path("log"))
        if model is None:
            self.rows.append(Measure(name, "ms", peer_name, peer, None, at_most=1.0))
            return
        Projector(self.memory.log, model, PAGE).catch_up()
        hot = Scope(READER)
        self.rows.append(Measure(f"{name}: {len(model.read_scope(hot)):,}", "ms", peer_name,
                                 peer, p50(partial(model.read_scope, hot), calls),
                                 at_most=1.0))
        model.close()

    def redis_projection(self) -> None:
        """MemSwarm's Redis read model projecting the events (from an in-process copy of the
        log) against the naive pipelines, on the same server, under prefixes of this run's."""
        progress("Redis projection")
        name, unit, peer_name = ("Redis projection", "memories/s",
                                 "naive redis-py pipelined HSET+ZADD")
        url = redis_url()
        if not redis_answers(url):
            self.notes.append(f"Redis: nothing answers at {url}; set MEMSWARM_REDIS_URL")
            self.rows.append(Measure(name, unit, peer_name, None, None, at_least=1.5))
            return
        source = InMemoryEventLog()
        source.import_events(self.recorded)
        prefix = f"bench-peers-{new_id()}"
        model = RedisReadModel(url, prefix=prefix)
        client = redis.Redis.from_url(url)
        try:
            ours = len(self.recorded) / timed(Projector(source, model, PAGE).catch_up)
            peer = naive_redis(client, f"{prefix}-naive", self.recorded)
        finally:
            model.drop()
            model.close()
            delete_keys(client, f"{prefix}-naive")
            client.close()
        self.notes.append(f"Redis: {url}, this run's keys only (deleted after)")
        self.rows.append(Measure(name, unit, peer_name, peer, ours, at_least=1.5))

    def as_of(self) -> None:
        """``as_of`` at positions of the log's second half, each followed by a read of one
        agent's memories as they were then (``as_of`` alone folds nothing: the read is where
        the work is). The calls stop at ``--as-of-budget`` seconds."""
        calls, budget = self.args.as_of, self.args.as_of_budget
        progress(f"{calls} as_of calls (at most {budget:g} s)")
        head = self.memory.log.head()
        deadline = time.perf_counter() + budget
        rng = random.Random(13)
        samples: list[float] = []
        found = 0
        while len(samples) < calls and (not samples or time.perf_counter() < deadline):
            position = rng.randrange(head // 2, head + 1)
            start = time.perf_counter()
            found = len(self.memory.as_of(position).read_scope(agent_id=READER))
            samples.append((time.perf_counter() - start) * 1000)
        self.notes.append(f"as_of: p50 of {len(samples)} calls, each as_of(position) then "
                          f"read_scope of {READER} then ({found:,} memories at the last)")
        self.rows.append(Measure(f"as_of at {head:,} events + a read, p50", "ms", "-", None,
                                 percentile(samples, 50), under=20))

    def print(self) -> None:
        payload = sum(len(msgpack.packb(m.content)) for m in self.memories) / self.args.events
        print_table(
            f"MemSwarm and its peers, {self.args.events:,} memories "
            f"({self.args.events // PER_AGENT:,} agents x 1k, {GROUPS} groups, {CONTEXTS} "
            f"contexts, {payload:.0f}-byte msgpack content), one run",
            ["measure", "unit", "peer", "peer's", "MemSwarm", "MemSwarm / peer", "goal",
             "result"], [r.cells() for r in self.rows], decimals=[0, 0, 0, 2, 2, 2],
            notes=[f"machine: {platform.platform()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
                   "open: a new process, from SQLiteSharedMemory(path) until read_scope of "
                   "one agent answered; memory: its resident set then, the imports included",
                   *self.notes])


def write_each(memory: SharedMemory, mine: Sequence[Memory]) -> None:
    """``write_scope`` each memory, as its agent's code would."""
    for m in mine:
        memory.write_scope(m.content["value"], {"agent_id": m.agent_id, "group_id": m.group_id,
                                                **m.content["metadata"]},
                           context_id=m.context_id)


def progress(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="memories written (the log)")
    parser.add_argument("--single", type=int, default=2000, help="single writes per store")
    parser.add_argument("--reads", type=int, default=500, help="reads of 1k memories timed")
    parser.add_argument("--as-of", type=int, default=20, help="as_of calls timed")
    parser.add_argument("--as-of-budget", type=float, default=300,
                        help="seconds for the as_of measure")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10k events, 300 "
                        "single writes, 50 reads, 5 as_of calls in at most 30 s")
    args = parser.parse_args()
    if args.quick:
        args.events, args.single, args.reads, args.as_of, args.as_of_budget = (
            10_000, 300, 50, 5, 30)
    if min(args.single, args.reads, args.as_of) < 1 or args.as_of_budget <= 0:
        parser.error("the counts and the budget must be positive")
    if args.events < PER_AGENT:
        parser.error(f"--events must be at least {PER_AGENT}")
    args.single = min(args.single, args.events)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(args, tmp)
        run.appends()
        run.single_writes()
        run.reads()
        run.redis_projection()
        run.as_of()
        run.memory.close()
    run.print()


if __name__ == "__main__":
    main()
