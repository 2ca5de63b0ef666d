"""The SQL view kept in the log's own database: opening reads no event, every process shares
it, the writes since the last read are folded at once by the next read (or, with
``view_upkeep="append"``, inside every append), a killed writer leaves it equal to the fold,
appends that do not keep it are caught up, replays switch atomically, a forget racing a fold
leaves no content behind, and it reads the same on PostgreSQL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from memswarm_es import (
    HybridMemory,
    InMemorySharedMemory,
    SharedMemory,
    SQLiteSharedMemory,
    VersionConflictError,
)
from memswarm_es.errors import InvalidInputError, LogMismatchError
from memswarm_es.events import EventType, NewEvent
from memswarm_es.log import EventFilter, InProcessLog
from memswarm_es.log import sql as sql_log
from memswarm_es.log.sql import SQLEventLog
from memswarm_es.memory import PostgresSharedMemory
from memswarm_es.scopes import Scope
from projections import open_read_model
from projections import sql as view_module
from projections.fold import fold
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector
from projections.sql import SQLReadModel, kept_view
from tests.histories import (
    assert_is_fold,
    copy_database,
    count_log_reads,
    fill,
    memory_events,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the events the SQL log decodes from its rows (every read of an event does)."""
    count = [0]
    one, many = sql_log.event_from_row, sql_log.events_from_rows

    def counting(row: object) -> object:
        count[0] += 1
        return one(row)  # type: ignore[arg-type]

    def counting_all(rows: list[object]) -> object:
        count[0] += len(rows)
        return many(rows)  # type: ignore[arg-type]

    monkeypatch.setattr(sql_log, "event_from_row", counting)
    monkeypatch.setattr(sql_log, "events_from_rows", counting_all)
    return count


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_opening_a_log_with_its_view_reads_no_event(tmp_path: Path, decoded: list[int]) -> None:
    path = tmp_path / "big.db"
    mem = SQLiteSharedMemory(str(path), synchronous="OFF")
    fill(mem.log, 3000, batch=500)
    mem.read_scope(agent_id="a")  # the first read folds the writes
    assert mem.read_model.checkpoint() == mem.log.head() == 3000
    assert_is_fold(mem.read_model, mem.log)
    mem.close()

    decoded[0] = 0
    again = SQLiteSharedMemory(str(path))
    some = again.read_scope(agent_id="a")
    assert some and again.get(some[0].memory_id) == some[0]
    # The projector looks at the event at the view's checkpoint before each read (1 each).
    assert decoded[0] <= 3
    again.close()


def test_a_log_without_the_view_is_folded_once_on_first_open(tmp_path: Path,
                                                              decoded: list[int]) -> None:
    path = tmp_path / "old.db"
    log = SQLEventLog(sqlite_url(path), synchronous="OFF")  # as an earlier version wrote it
    fill(log, 2000, batch=400)
    log.close()
    decoded[0] = 0
    first = SQLiteSharedMemory(str(path))
    assert decoded[0] == 0  # opening folds nothing: the first use does
    first.sync()
    # folded once, in bounded write transactions: each event decoded once, no look besides
    assert decoded[0] == 2000
    assert_is_fold(first.read_model, first.log)
    first.close()
    decoded[0] = 0
    SQLiteSharedMemory(str(path)).close()
    assert decoded[0] == 0


def test_appends_that_do_not_keep_the_view_are_caught_up(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    kept = SQLiteSharedMemory(str(path), synchronous="OFF", view_upkeep="append")
    fill(kept.log, 300, seed=1, batch=100)
    plain = SQLEventLog(sqlite_url(path), synchronous="OFF")  # keeps no view
    events = list(memory_events(400, seed=2))
    plain.append(events[:200])
    assert kept.read_model.checkpoint() == 300  # left behind
    kept.log.append(events[200:201])  # a kept append catches it up in its own transaction
    assert kept.read_model.checkpoint() == 501
    assert_is_fold(kept.read_model, kept.log)
    plain.append(events[201:])
    assert kept.sync() == 700  # and so does the projector before a read
    assert_is_fold(kept.read_model, kept.log)
    plain.close()
    kept.close()


def test_a_refused_batch_leaves_the_view_as_it_was(tmp_path: Path) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "refused.db"), view_upkeep="append")
    m = mem.write_scope("v1", metadata={"agent_id": "a"})
    log = mem.log
    stale = NewEvent.create(EventType.MEMORY_UPDATED, Scope("a"), "a", {"value": "late"},
                            memory_id=m, version=2)
    mem.update(m, "v2")
    batches = {"stale": [stale], "new": list(memory_events(30, seed=5)),
               "more": list(memory_events(30, seed=6))}
    outcome: dict[str, object] = {}

    def append(name: str) -> None:
        try:
            outcome[name] = log.append(batches[name])
        except VersionConflictError as exc:
            outcome[name] = exc

    with log._lock:  # the three appends queue up as one group: a savepoint each
        threads = [threading.Thread(target=append, args=(n,)) for n in batches]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(log._queue) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(log._queue) == 3
    for t in threads:
        t.join()
    assert isinstance(outcome["stale"], VersionConflictError)
    assert mem.read_model.checkpoint() == log.head() == 62
    assert mem.get(m).value == "v2"
    assert_is_fold(mem.read_model, log)
    mem.close()


WRITER = """
import sys
from memswarm_es import SQLiteSharedMemory
from tests.histories import memory_events
mem = SQLiteSharedMemory(sys.argv[1], synchronous="NORMAL", view_upkeep=sys.argv[4])
events = list(memory_events(int(sys.argv[2]), seed=int(sys.argv[3])))
for start in range(0, len(events), 50):
    mem.log.append(events[start:start + 50])
    if sys.argv[4] == "read" and start % 200 == 0:
        mem.read_scope(agent_id="a")  # reads now and then, folding every writer's writes
    print(start, flush=True)
    if start == 0:
        sys.stdin.readline()  # both processes hold the file open, then write at once
seen = len(mem.log.read())  # before the read: the other writer may still be appending
mem.read_scope(agent_id="a")
print("seen", seen, mem.read_model.checkpoint(), flush=True)
"""


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, *args], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.mark.parametrize("upkeep", ["read", "append"])
def test_processes_writing_one_file_share_one_view(tmp_path: Path, upkeep: str) -> None:
    path = tmp_path / "shared.db"
    SQLiteSharedMemory(str(path)).close()
    writers = [spawn(str(path), "1000", str(n), upkeep) for n in range(2)]
    for w in writers:  # each has written its first batch and waits
        assert w.stdout is not None and w.stdout.readline().strip() == "0"
    mem = SQLiteSharedMemory(str(path), view_upkeep=upkeep)
    mem.read_scope()  # a read here folds their writes (kept already with "append")
    assert mem.log.head() == mem.read_model.checkpoint() == 100
    for w in writers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    for w in writers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0
        seen, checkpoint = map(int, out.split()[-2:])  # the view had every event it saw
        assert checkpoint >= seen >= 1050  # its own writes, and at least the other's first
    mem.sync()
    assert mem.read_model.checkpoint() == mem.log.head() == 2000
    assert_is_fold(mem.read_model, mem.log)  # no event lost or applied twice
    mem.close()


KILLED = """
import sys
from memswarm_es import SQLiteSharedMemory
from tests.histories import memory_events
mem = SQLiteSharedMemory(sys.argv[1], synchronous="OFF", view_upkeep="append")
events = list(memory_events(10_000, seed=int(sys.argv[2])))
for start in range(0, len(events), 200):
    mem.log.append(events[start:start + 200])
    print(start, flush=True)
"""


def test_a_writer_killed_mid_append_leaves_the_view_equal_to_the_fold(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    SQLiteSharedMemory(str(path)).close()
    for round_ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", KILLED, str(path), str(round_)],
                                  cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                  env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert writer.stdout is not None
        for _ in range(2 + round_):  # some batches in, then kill it inside a later one
            writer.stdout.readline()
        time.sleep(0.01 * round_)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        mem = SQLiteSharedMemory(str(path), view_upkeep="append")
        assert mem.read_model.checkpoint() == mem.log.head() > 0  # kept by the appends
        assert_is_fold(mem.read_model, mem.log)
        mem.close()


FIRST_BUILD = """
import sys, time
import memswarm_es.log.sql as log_module
import projections.sql as view
from memswarm_es import SQLiteSharedMemory
view.BATCH, view.FOLD_SECONDS = 50, 0  # a transaction of one batch of 50 at a time
stop, where = int(sys.argv[2]), sys.argv[3]
fold = view.SQLReadModel._fold
folded = [0]
def counted(self, cursor, events):
    fold(self, cursor, events)
    folded[0] += 1
    print("folded", flush=True)
    if where == "in a transaction" and folded[0] == stop:
        sys.stdin.readline()  # holding the write lock: wait here to be killed
class Pausing:  # the log's clock, pausing between two transactions of the build
    perf_counter = staticmethod(time.perf_counter)
    @staticmethod
    def sleep(seconds):
        if where == "between transactions" and folded[0] == stop:
            print("paused", flush=True)
            sys.stdin.readline()
        time.sleep(seconds)
view.SQLReadModel._fold = counted
log_module.time = Pausing
SQLiteSharedMemory(sys.argv[1]).sync()  # its first use folds the view
print("done", flush=True)
"""


def first_build(path: Path, stop: int, where: str) -> subprocess.Popen[str]:
    """A process opening ``path``, folding its view 50 events per transaction, stopped
    after ``stop`` batches ``where`` (holding the write lock, or between transactions)."""
    builder = subprocess.Popen([sys.executable, "-c", FIRST_BUILD, str(path), str(stop), where],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert builder.stdout is not None
    for _ in range(stop):
        assert builder.stdout.readline().strip() == "folded"
    if where == "between transactions":
        assert builder.stdout.readline().strip() == "paused"
    return builder


def view_checkpoint(path: Path) -> int:
    with sqlite3.connect(path) as peek:
        (checkpoint,) = peek.execute("SELECT checkpoint FROM memswarm_view_state").fetchone()
    peek.close()
    return int(checkpoint)


def test_a_first_build_killed_half_way_resumes_where_it_committed(tmp_path: Path,
                                                                  decoded: list[int]) -> None:
    path = tmp_path / "build.db"
    log = SQLEventLog(sqlite_url(path), synchronous="OFF")
    fill(log, 1000, batch=500)
    log.close()
    builder = first_build(path, 5, "in a transaction")
    os.kill(builder.pid, signal.SIGKILL)
    builder.wait(timeout=30)
    assert view_checkpoint(path) == 200  # the four batches committed before the fifth's
    decoded[0] = 0
    mem = SQLiteSharedMemory(str(path))
    mem.sync()
    assert decoded[0] == 800  # the rest, and nothing twice (no look besides)
    assert mem.read_model.checkpoint() == 1000
    assert_is_fold(mem.read_model, mem.log)
    mem.close()


def test_other_processes_append_while_a_first_build_runs(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    log = SQLEventLog(sqlite_url(path), synchronous="OFF")
    fill(log, 2000, batch=500)
    builder = first_build(path, 3, "between transactions")
    for round_ in range(3):  # the lock is free between the build's transactions
        log.append(list(memory_events(10, seed=10 + round_)))
    assert view_checkpoint(path) == 150  # and what the build folded so far is committed
    assert builder.stdin is not None
    builder.stdin.write("go\n")
    out, _ = builder.communicate(timeout=120)
    assert builder.returncode == 0 and out.split()[-1] == "done"
    mem = SQLiteSharedMemory(str(path))
    assert mem.read_model.checkpoint() == mem.log.head() == 2030
    assert_is_fold(mem.read_model, mem.log)
    log.close()
    mem.close()


def test_an_append_catches_up_a_view_far_behind_by_a_bounded_part(tmp_path: Path) -> None:
    path = tmp_path / "behind.db"
    mem = SQLiteSharedMemory(str(path), synchronous="OFF", view_upkeep="append")
    fill(mem.log, 100, seed=1)
    plain = SQLEventLog(sqlite_url(path), synchronous="OFF")  # keeps no view
    fill(plain, 2500, seed=2)
    mem.log.append(list(memory_events(10, seed=3)))  # 1000 caught up, its own not reached
    assert mem.read_model.checkpoint() == 100 + view_module.CATCH_UP
    assert_is_fold(mem.read_model, mem.log)
    mem.log.append(list(memory_events(10, seed=4)))
    assert mem.read_model.checkpoint() == 100 + 2 * view_module.CATCH_UP
    mem.log.append(list(memory_events(10, seed=5)))  # the rest, and its own
    assert mem.read_model.checkpoint() == mem.log.head() == 2630
    assert_is_fold(mem.read_model, mem.log)
    plain.close()
    mem.close()


def test_a_replay_switches_to_the_rebuilt_view_at_once(tmp_path: Path) -> None:
    path = tmp_path / "replay.db"
    mem = SQLiteSharedMemory(str(path), synchronous="OFF")
    fill(mem.log, 500, batch=100)
    with sqlite3.connect(path) as db:  # damage the served view
        db.execute("DELETE FROM memswarm_view_memories WHERE position < 100")
    db.close()
    assert mem.replay() == 500
    assert_is_fold(mem.read_model, mem.log)
    with sqlite3.connect(path) as db:  # the twin's tables went with the switch
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert not any("view_next" in n for n in names)
    mem.close()


def test_a_view_ahead_of_its_log_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "ahead.db"
    mem = SQLiteSharedMemory(str(path))
    fill(mem.log, 200, batch=100)
    with sqlite3.connect(path) as db:  # as if the log lost events the view had applied
        db.execute("UPDATE memswarm_view_state SET checkpoint = 250")
    db.close()
    mem.close()
    again = SQLiteSharedMemory(str(path))
    again.write_scope("x", metadata={"agent_id": "a"})  # a kept append leaves it alone
    assert again.sync() == 201  # the projector rebuilds it beside, then switches
    assert_is_fold(again.read_model, again.log)
    again.close()


def test_a_view_of_another_log_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    view = open_read_model(f"sql+sqlite:///{path}")
    other = InProcessLog()
    fill(other, 100)
    Projector(other, view).catch_up()
    view.close()
    with pytest.raises(LogMismatchError):
        SQLiteSharedMemory(str(path)).read_scope()
    log = SQLEventLog(sqlite_url(path))
    kept = kept_view(log)
    log.append(list(memory_events(10, seed=3)))  # appends go on; the view is left alone
    assert kept.followed_log() == other.identity()
    assert_is_fold(kept, other)
    log.close()


def test_a_process_that_does_not_keep_the_view_forgets_from_it_too(tmp_path: Path) -> None:
    path = tmp_path / "forget.db"
    mem = SQLiteSharedMemory(str(path))
    m = mem.write_scope("secret", metadata={"agent_id": "a", "group_id": "g"})
    kept = mem.write_scope("kept", metadata={"agent_id": "a"})
    mem.sync()  # the view holds both
    plain = SharedMemory(SQLEventLog(sqlite_url(path)), InMemoryReadModel())
    plain.forget(m, reason="erasure")
    with sqlite3.connect(path) as db:  # gone from the view in the forget's own transaction
        assert db.execute("SELECT count(*) FROM memswarm_view_memories").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM memswarm_view_readers").fetchone() == (1,)
    db.close()
    assert [e.memory_id for e in mem.read_scope()] == [kept]
    assert_is_fold(mem.read_model, mem.log)
    plain.close()
    mem.close()


def test_dropping_the_view_takes_its_trigger_along(tmp_path: Path) -> None:
    path = tmp_path / "dropped.db"
    view = open_read_model(f"sql+sqlite:///{path}")
    assert isinstance(view, SQLReadModel)
    mem = SharedMemory(SQLEventLog(sqlite_url(path)), InMemoryReadModel())
    m = mem.write_scope("x", metadata={"agent_id": "a"})
    view.drop()
    view.close()
    mem.forget(m, reason="erasure")  # the trigger would have named the dropped tables
    with sqlite3.connect(path) as db:
        assert not db.execute("SELECT name FROM sqlite_master WHERE name LIKE '%view%'"
                              ).fetchall()
    db.close()
    mem.close()


def test_appends_go_on_after_another_process_drops_the_view(tmp_path: Path) -> None:
    path = tmp_path / "dropped-elsewhere.db"
    mem = SQLiteSharedMemory(str(path))
    m = mem.write_scope("x", metadata={"agent_id": "a"})
    view = open_read_model(f"sql+sqlite:///{path}")
    assert isinstance(view, SQLReadModel)
    view.drop()  # another process, say, while this one keeps the view
    view.close()
    mem.log.append(list(memory_events(20, seed=7)))  # recorded without the view
    assert mem.log.head() == 21
    again = SQLiteSharedMemory(str(path))  # made anew, folded from the log at its first use
    again.sync()
    assert again.read_model.checkpoint() == 21
    mem.update(m, "y")  # and kept by both again
    assert again.get(m).value == "y"
    assert_is_fold(again.read_model, again.log)
    mem.close()
    again.close()


def test_concurrent_replays_each_fill_a_twin_of_their_own(tmp_path: Path) -> None:
    path = tmp_path / "replays.db"
    mem = SQLiteSharedMemory(str(path))
    fill(mem.log, 300, batch=100)
    one, two = mem.read_model.staging(), mem.read_model.staging()
    for twin in (one, two):
        Projector(mem.log, twin).catch_up()
    assert mem.read_model.switch_to(one)
    one.close()
    assert mem.read_model.switch_to(two)  # the other's twin was left whole
    two.close()
    assert_is_fold(mem.read_model, mem.log)
    assert not [n for n in table_names(path) if "view_next" in n]
    mem.close()


def test_a_forget_during_a_replay_leaves_nothing_in_its_twin(tmp_path: Path) -> None:
    path = tmp_path / "twin-forget.db"
    mem = SQLiteSharedMemory(str(path))
    m = mem.write_scope("secret", metadata={"agent_id": "a"})
    mem.write_scope("kept", metadata={"agent_id": "a"})
    twin = mem.read_model.staging()
    Projector(mem.log, twin).catch_up()
    with sqlite3.connect(path) as db:  # recorded for every redaction to scrub
        keys = {k for (k,) in db.execute("SELECT key FROM memswarm_meta")}
    db.close()
    assert any(k.startswith("scrubbed:") and "view_next" in k for k in keys)
    mem.forget(m, reason="erasure")  # the trigger empties the twin in the forget's transaction
    with sqlite3.connect(path) as db:
        twins = [n for n in table_names(path) if "view_next" in n and n.endswith("memories")]
        assert [db.execute(f"SELECT count(*) FROM {n}").fetchone() for n in twins] == [(1,)]
    db.close()
    assert b"secret" not in path.read_bytes()
    twin.close()
    mem.close()


def table_names(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    db.close()
    return names


@pytest.fixture
def postgres_memory(postgres_url: str) -> Iterator[tuple[str, str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    yield postgres_url, prefix


def test_postgres_keeps_one_view_for_every_writer(postgres_memory: tuple[str, str]) -> None:
    url, prefix = postgres_memory
    one = PostgresSharedMemory(url, table_prefix=prefix)
    fill(one.log, 300, seed=1, batch=100)
    two = PostgresSharedMemory(url, table_prefix=prefix)  # another machine, say
    two.read_scope()  # its first read folds the other machine's writes
    assert two.read_model.checkpoint() == 300
    fill(two.log, 300, seed=2, batch=100)
    a = one.agent("a")
    m = a.write_scope("mine", readable_by=["agent:b"])
    assert two.agent("b").get(m).value == "mine"
    assert one.read_model.checkpoint() == two.log.head() == 601
    assert_is_fold(one.read_model, one.log)
    one.forget(m, reason="erasure")
    assert_is_fold(two.read_model, two.log)
    one.close()
    two.close()


def test_postgres_view_is_folded_once_for_a_log_without_it(
        postgres_memory: tuple[str, str]) -> None:
    url, prefix = postgres_memory
    log = SQLEventLog(url, table_prefix=prefix)
    fill(log, 500, batch=250)
    log.close()
    mem = PostgresSharedMemory(url, table_prefix=prefix)
    assert_is_fold(mem.read_model, mem.log)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT checkpoint FROM {prefix}view_state")).scalar() == 500
    engine.dispose()
    mem.close()


def test_a_hybrid_over_sqlite_folds_nothing_into_the_sql_view_it_does_not_serve(
        tmp_path: Path) -> None:
    """``HybridMemory(cache, SQLiteSharedMemory(path))`` reads from the cache: the SQLite
    memory's own view is neither folded when opened nor kept by the hybrid's appends; the
    next SQLite memory that serves from the file catches it up."""
    path = tmp_path / "swarm.db"
    log = SQLEventLog(f"sqlite:///{path}")
    fill(log, 300)  # a log written without its view
    log.close()
    SQLiteSharedMemory(str(path)).close()  # opened and closed unused: folds nothing either
    hybrid = HybridMemory(InMemorySharedMemory(), SQLiteSharedMemory(str(path)))
    mid = hybrid.write_scope("hello", metadata={"agent_id": "a"})
    assert [e.memory_id for e in hybrid.read_scope(agent_id="a")][-1] == mid
    probe = SQLEventLog(f"sqlite:///{path}")
    assert SQLReadModel(probe).checkpoint() == 0  # never folded, not kept by the appends
    probe.close()
    hybrid.close()
    with SQLiteSharedMemory(str(path)) as served:
        assert served.get(mid).value == "hello"  # the first use folds it, whole
        assert served.read_model.checkpoint() == served.log.head() == 301
        assert_is_fold(served.read_model, served.log)


def test_writes_leave_the_view_to_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "deferred.db"
    mem = SQLiteSharedMemory(str(path))
    first = mem.write_scope("first", metadata={"agent_id": "a"})
    at = mem.read_model.checkpoint()  # the first use built the view
    fill(mem.log, 200, seed=3, batch=50)
    mine = mem.agent("a").write_scope("mine")
    assert mem.read_model.checkpoint() == at < mem.log.head()  # the writes left it alone
    other = SQLiteSharedMemory(str(path))  # another process, say
    assert other.get(mine).value == "mine"  # its first read folds every write since
    assert mem.read_model.checkpoint() == mem.log.head()  # one view, shared
    assert mem.agent("a").get(mine).value == "mine" and mem.get(first).value == "first"
    assert_is_fold(mem.read_model, mem.log)
    other.close()
    mem.close()


def test_a_subscriber_sees_a_writer_that_never_reads(tmp_path: Path) -> None:
    path = tmp_path / "subscribed.db"
    writer = SQLiteSharedMemory(str(path))
    reader = SQLiteSharedMemory(str(path))
    with reader.subscribe(agent_id="a") as subscription:
        written = [writer.write_scope(f"v{i}", metadata={"agent_id": "a"}) for i in range(3)]
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:  # (one poll may bring all three)
            seen += [v.memory_id for v in subscription.poll(timeout=1)]
    assert seen == written
    writer.close()
    reader.close()


def test_folds_at_read_leave_every_append_durable(tmp_path: Path) -> None:
    """A fold commits without waiting for the disk (the view is derived); the connection it
    used goes back to the pool at the log's own synchronous=FULL, which appends then use."""
    mem = SQLiteSharedMemory(str(tmp_path / "durable.db"))
    for i in range(5):
        mem.write_scope(f"v{i}", metadata={"agent_id": "a"})
        assert len(mem.read_scope(agent_id="a")) == i + 1  # a fold each time
    engine = mem.log.engine
    held = [engine.raw_connection() for _ in range(engine.pool.checkedin() + 1)]
    try:
        assert {c.cursor().execute("PRAGMA synchronous").fetchone()[0] for c in held} == {2}
        assert {c.cursor().execute("PRAGMA cache_size").fetchone()[0] for c in held} == {-2000}
    finally:
        for c in held:
            c.close()
    mem.close()


def test_a_first_fold_leaves_the_append_connection_durable(tmp_path: Path) -> None:
    """A log without a view is folded once, on the connection appends use, relaxed for it
    (no wait for the disk, a larger cache): then set back to synchronous=FULL."""
    path = tmp_path / "first.db"
    log = SQLEventLog(sqlite_url(path))  # keeps no view
    log.append([NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a"), "a", {"value": i},
                                memory_id=f"m{i}", version=1) for i in range(20)])
    log.close()
    mem = SQLiteSharedMemory(str(path))
    assert len(mem.read_scope(agent_id="a")) == 20
    raw = mem.log._write_raw
    assert raw is not None
    cursor = raw.cursor()
    assert cursor.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert cursor.execute("PRAGMA cache_size").fetchone()[0] == -2000
    mem.write_scope("after", metadata={"agent_id": "a"})
    assert len(mem.read_scope(agent_id="a")) == 21
    mem.close()


def test_a_view_upkeep_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="view_upkeep"):
        SQLiteSharedMemory(str(tmp_path / "x.db"), view_upkeep="sometimes")


def test_a_kept_view_knows_what_its_own_appends_applied(tmp_path: Path) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "known.db"), view_upkeep="append")
    mem.write_scope("x", metadata={"agent_id": "a"})
    assert mem.read_model.known_checkpoint() == mem.log.head() == 1
    bad = NewEvent.create(EventType.MEMORY_UPDATED, Scope("a"), "a", {"value": "y"},
                          memory_id="missing", version=5)
    mem.log.append([bad])  # recorded (the log takes any version), applied, committed
    assert mem.read_model.known_checkpoint() == 2
    mem.read_model.clear()
    assert mem.read_model.known_checkpoint() == 0
    assert mem.sync() == 2


def test_rows_stored_in_the_form_of_earlier_versions_still_read_as_the_fold(
        tmp_path: Path) -> None:
    """The view stores the permissions and the namespace of an entry packed apart (read
    through a cache of the few distinct ones); rows written before, as the plain array of the
    entry's fields, read the same, and so does a row met while the caches are cold or half
    warm (the fast path then finishes the row where it stopped)."""
    from memswarm_es.events import decode, encode
    from projections.fold import entry_from_row, entry_row

    path = tmp_path / "forms.db"
    mem = SQLiteSharedMemory(str(path), synchronous="OFF")
    fill(mem.log, 400, seed=3, batch=100)
    mem.agent("a").put(("docs", "x"), "k", {"n": 1}, readable_by=["*"])
    with sqlite3.connect(path) as db:  # every other row back to the plain form
        rows = db.execute("SELECT position, entry FROM memswarm_view_memories").fetchall()
        plain = [(encode(entry_row(view_module._entry(blob))), position)
                 for position, blob in rows[::2]]
        db.executemany("UPDATE memswarm_view_memories SET entry = ? WHERE position = ?", plain)
        assert all(isinstance(decode(blob)[14], list) for blob, _ in plain)
    db.close()
    for warm in ("cold", "principals only", "warm"):
        if warm != "warm":
            view_module._namespaces_read.clear()
        if warm == "cold":
            view_module._principals_read.clear()
        assert_is_fold(mem.read_model, mem.log)
    for _, blob in rows:
        assert view_module._entry(blob) == entry_from_row(entry_row(view_module._entry(blob)))
    assert mem.get_by_key(("docs", "x"), "k").namespace == ("docs", "x")
    mem.close()


def _checkouts(engine: sa.Engine) -> list[int]:
    count = [0]
    sa.event.listen(engine, "checkout", lambda *_: count.__setitem__(0, count[0] + 1))
    return count


def _reads_on_their_own_connections(mem: SharedMemory) -> None:
    """Reads from several threads at once run each on the thread's own connection, kept (no
    pool checkout per read), answer as the pooled reads did, and are all closed with the
    memory; a thread that ends takes its connection along."""
    model = mem.read_model
    assert isinstance(model, SQLReadModel)
    readers = mem.log.readers  # the log's and its view's reads share them
    fill(mem.log, 200, seed=4, batch=100)
    expected = model.read_scope(Scope(), None)
    checkouts = _checkouts(mem.log.engine)
    barrier, answers, errors = threading.Barrier(3), [], []

    def read() -> None:
        try:
            barrier.wait()
            for _ in range(20):
                answers.append(model.read_scope(Scope(), None) == expected)
                answers.append(model.read_scope(Scope(), "a") == [
                    e for e in expected if e.memory_id in model.get_many(
                        [x.memory_id for x in expected], "a")])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(answers) == 120 and all(answers)
    assert checkouts[0] == 3  # one per thread, when it first read: none per read
    model.read_scope(Scope(), None)
    (mine,) = [r for r in readers._open if r is readers._local.reader]
    others = [r.raw for r in readers._open if r is not mine]
    del threads
    import gc
    gc.collect()
    assert len(readers._open) == 1  # the threads' connections ended with them
    raws = [mine.raw, *others]
    mem.close()
    for raw in raws:
        with pytest.raises(Exception):  # noqa: B017 (sqlite3 and psycopg raise their own)
            raw.cursor().execute("SELECT 1")
    assert not readers._open or all(getattr(r.raw, "closed", True) for r in readers._open)


def test_reads_run_on_a_connection_of_each_thread_sqlite(tmp_path: Path) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "threads.db"), synchronous="OFF")
    _reads_on_their_own_connections(mem)


def test_reads_run_on_a_connection_of_each_thread_postgres(
        postgres_memory: tuple[str, str]) -> None:
    url, prefix = postgres_memory
    mem = PostgresSharedMemory(url, table_prefix=prefix)
    model = mem.read_model
    assert isinstance(model, SQLReadModel)
    model.read_scope(Scope(), None)
    # Between reads the connection holds no transaction open (no snapshot, no lock).
    assert mem.log.readers._local.reader.raw.info.transaction_status == 0  # psycopg's IDLE
    _reads_on_their_own_connections(mem)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_reads_on_a_connection_of_its_own(tmp_path: Path) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "fork.db"), synchronous="OFF")
    fill(mem.log, 50)
    expected = mem.read_scope()
    parent = mem.log.readers._local.reader
    pid = os.fork()
    if pid == 0:  # the child: a connection of its own, the parent's left open
        ok = mem.read_scope() == expected and mem.log.readers._local.reader is not parent
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert mem.read_scope() == expected and mem.log.readers._local.reader is parent
    mem.close()


def test_a_read_with_nothing_new_reads_no_event(tmp_path: Path, decoded: list[int]) -> None:
    """Reads skip the catch-up while nothing was committed to the file since the last one
    (SQLite's data_version), and never miss what another connection committed."""
    path = tmp_path / "stamp.db"
    mem = SQLiteSharedMemory(str(path))
    other = SQLiteSharedMemory(str(path))  # another process, say
    first = mem.write_scope("first", metadata={"agent_id": "a"})
    assert [e.memory_id for e in mem.read_scope(agent_id="a")] == [first]
    mem.read_scope(agent_id="a")  # after the fold's own commit, at the head: remembered
    decoded[0] = 0
    for _ in range(5):
        assert [e.memory_id for e in mem.read_scope(agent_id="a")] == [first]
    assert decoded[0] == 0  # no look at the log at all
    second = other.write_scope("second", metadata={"agent_id": "a"})
    assert [e.memory_id for e in mem.read_scope(agent_id="a")] == [first, second]
    other.replay()  # the view rebuilt elsewhere: seen as a change too
    assert [e.memory_id for e in mem.read_scope(agent_id="a")] == [first, second]
    third = other.write_scope("third", metadata={"agent_id": "a"})
    assert mem.agent("a").get(third).value == "third"
    other.close()
    mem.close()


def test_a_read_folds_the_writes_since_reading_each_event_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writes since the last read are folded in the view's own transactions, which read
    them from the log inside (never a projector's batch, read first and read again), to the
    view a fold of the log gives."""
    mem = SQLiteSharedMemory(str(tmp_path / "once.db"))
    mem.read_scope(agent_id="a")  # the view is made
    ids = [mem.write_scope(f"v{i}", metadata={"agent_id": f"a{i % 3}"}) for i in range(2500)]
    mem.update(ids[0], "changed")
    mem.delete(ids[1])
    outside = count_log_reads(monkeypatch)
    got = {e.memory_id: (e.value, e.version) for a in ("a0", "a1", "a2")
           for e in mem.read_scope(agent_id=a)}
    head = mem.log.head()
    assert all(after >= head - 1 for after in outside)  # a look at the head at most
    expected = fold(mem.log.read()).entries  # (read after the look above was checked)
    assert got == {m: (e.value, e.version) for m, e in expected.items()}
    assert mem.read_model.checkpoint() == mem.log.head()
    mem.close()


def test_reads_leave_no_read_transaction_open_between_them(tmp_path: Path) -> None:
    """Between reads, no connection of a memory holds a statement open: another connection's
    checkpoint can empty the WAL (a forget's scrub needs that), and closing the memory leaves
    everything in the database file (the last connection's close checkpoints the WAL; a
    statement left unfinished defers that close)."""
    def use(mem: SQLiteSharedMemory) -> None:
        for i in range(3):
            mem.write_scope(f"v{i}", metadata={"agent_id": "a"})
            mem.read_scope(agent_id="a")
            mem.log.query(EventFilter(Scope(agent_id="a")))
            mem.log.head()

    path = tmp_path / "idle.db"
    mem = SQLiteSharedMemory(str(path))
    use(mem)
    raw = sqlite3.connect(path)
    try:
        busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        raw.close()
    assert busy == 0
    mem.close()
    closed = tmp_path / "closed.db"
    mem = SQLiteSharedMemory(str(closed))
    use(mem)
    mem.close()
    assert not os.path.exists(f"{closed}-wal")
    bare = tmp_path / "bare.db"  # a log alone, as the CLI and the runner open it
    log = SQLEventLog(sqlite_url(bare))
    for batch in ([1], [2, 3, 4]):  # (a single event and a batch take two paths)
        log.append([NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a"), "a", {"value": n},
                                    memory_id=f"m{n}", version=1) for n in batch])
    log.query(EventFilter(Scope(agent_id="a")))
    log.close()
    assert not os.path.exists(f"{bare}-wal")


@pytest.mark.parametrize("copy_is", ["shorter", "another history"])
@pytest.mark.parametrize("view", ["read", "append", "memory"])
def test_a_memory_open_across_a_restore_reads_the_copy_and_writes_after_it(
        tmp_path: Path, view: str, copy_is: str) -> None:
    """A SQLite file put back from a copy (its backup API, as ``sqlite3 FILE ".restore
    COPY"``) under an open memory, the copy shorter than the log the memory saw last, or as
    long but another history: the next write follows the copy's head, and reads answer the
    fold of the log as it now is, whether the view lives in the file (folded at the next
    read, or kept in every append) or in this process (rebuilt)."""
    path, copy = tmp_path / "swarm.db", tmp_path / "copy.db"
    memory = (SharedMemory(SQLEventLog(f"sqlite:///{path}"), InMemoryReadModel())
              if view == "memory" else SQLiteSharedMemory(str(path), view_upkeep=view))
    try:
        kept = [memory.write_scope(f"kept {i}", {"agent_id": "a"}) for i in range(3)]
        assert len(memory.read_scope(agent_id="a")) == 3
        copy_database(path, copy)
        others: list[tuple[str, object]] = []
        if copy_is == "another history":  # the copy goes on with two events of its own
            other = SQLiteSharedMemory(str(copy))
            others = [(other.write_scope("other", {"agent_id": "a"}), "other")]
            other.update(kept[1], "other update")
            other.close()
        memory.write_scope("lost", {"agent_id": "a"})
        memory.update(kept[0], "lost update")
        assert len(memory.read_scope(agent_id="a")) == 4
        copy_database(copy, path)
        after = memory.write_scope("after", {"agent_id": "a"})
        got = memory.read_scope(agent_id="a")
        values = {m: f"kept {i}" for i, m in enumerate(kept)}
        if copy_is == "another history":
            values[kept[1]] = "other update"
        assert [(e.memory_id, e.value) for e in got] == [*values.items(), *others,
                                                         (after, "after")]
        assert got == sorted(fold(memory.log.read()).entries.values(), key=lambda e: e.position)
        assert memory.log.verify() == len(values) + len(others) + 1 + (copy_is != "shorter")
    finally:
        memory.close()
