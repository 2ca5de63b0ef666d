"""The EventLog contract, run against every log: in-process, SQLite file, PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event as sa_event

from memswarm_es.errors import (
    ChainBrokenError,
    CorruptLogError,
    ForeignStoreError,
    HeadConflictError,
    IdempotencyError,
    IntegrityError,
    InvalidInputError,
    LogNotFoundError,
    VersionConflictError,
)
from memswarm_es.events import EventType, NewEvent
from memswarm_es.log import EventFilter, EventLog, InMemoryEventLog, SQLEventLog, open_log
from memswarm_es.log.gcs import GCSEventLog
from memswarm_es.scopes import Scope
from tests.histories import copy_database


@pytest.fixture(params=["inprocess", "sqlite", "postgres", "gcs"])
def event_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventLog]:
    if request.param == "inprocess":
        log: EventLog = InMemoryEventLog()
    elif request.param == "sqlite":
        log = SQLEventLog(f"sqlite:///{tmp_path / 'log.db'}")
    elif request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        log = SQLEventLog(url, table_prefix=f"t{uuid.uuid4().hex[:8]}_")
    else:
        log = GCSEventLog(request.getfixturevalue("gcs_bucket"),
                          request.getfixturevalue("gcs_prefix"),
                          client=request.getfixturevalue("gcs_client"))
    yield log
    log.close()


def written(memory_id: str, agent: str = "a", value: object = "v", **kw: object) -> NewEvent:
    return NewEvent.create(EventType.MEMORY_WRITTEN, Scope(agent, "g"), agent,
                           {"value": value, "metadata": {}}, memory_id=memory_id, version=1,
                           **kw)


def updated(memory_id: str, version: int, agent: str = "a") -> NewEvent:
    return NewEvent.create(EventType.MEMORY_UPDATED, Scope(agent, "g"), agent,
                           {"value": f"v{version}"}, memory_id=memory_id, version=version)


def forgotten(memory_id: str, version: int, agent: str = "a") -> NewEvent:
    return NewEvent.create(EventType.MEMORY_FORGOTTEN, Scope(agent, "g"), agent,
                           {"reason": "asked"}, memory_id=memory_id, version=version)


def test_positions_are_gapless_and_the_chain_verifies(event_log: EventLog) -> None:
    first = event_log.append([written("m1"), written("m2")])
    second = event_log.append([updated("m1", 2)])
    assert [e.position for e in first + second] == [1, 2, 3]
    assert event_log.head() == 3
    assert [e.event_id for e in event_log.read()] == [e.event_id for e in first + second]
    assert event_log.verify() == 3
    assert event_log.digest().hash == second[0].hash
    times = [e.recorded_at_us for e in event_log.read()]
    assert times == sorted(times)


def test_read_pages_through_the_log(event_log: EventLog) -> None:
    event_log.append([written(f"m{i}") for i in range(25)])
    assert [e.position for e in event_log.read(after=10, limit=5)] == [11, 12, 13, 14, 15]
    batches = list(event_log.iter_events(after=3, batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 2]
    assert [len(b) for b in event_log.iter_events(batch_size=10, until=12)] == [10, 2]


def test_retried_event_id_returns_the_original_and_writes_nothing(event_log: EventLog) -> None:
    new = written("m1")
    (original,) = event_log.append([new])
    (again,) = event_log.append([new])
    assert again == original
    assert event_log.head() == 1


def test_event_id_reused_for_another_event_is_refused(event_log: EventLog) -> None:
    event_log.append([written("m1", event_id="e-1")])
    with pytest.raises(IdempotencyError):
        event_log.append([written("m2", event_id="e-1")])
    with pytest.raises(IdempotencyError):  # a batch half recorded is no retry
        event_log.append([written("m1", event_id="e-1"), written("m3")])
    assert event_log.head() == 1


def test_a_batch_naming_one_event_id_twice_is_refused(event_log: EventLog) -> None:
    with pytest.raises(IdempotencyError):
        event_log.append([written("m1", event_id="x"), written("m2", event_id="x")])
    assert event_log.head() == 0


def test_expected_head(event_log: EventLog) -> None:
    event_log.append([written("m1")], expected_head=0)
    with pytest.raises(HeadConflictError) as info:
        event_log.append([written("m2")], expected_head=0)
    assert info.value.actual == 1
    assert event_log.head() == 1


def test_a_version_is_taken_once_and_a_failed_batch_writes_nothing(event_log: EventLog) -> None:
    event_log.append([written("m1")])
    event_log.append([updated("m1", 2)])
    with pytest.raises(VersionConflictError) as info:
        event_log.append([written("m9"), updated("m1", 2)])
    assert info.value.actual == 2
    assert event_log.head() == 2
    assert event_log.latest("m9") is None
    assert event_log.verify() == 2


def test_query_by_scope_memory_and_actor(event_log: EventLog) -> None:
    event_log.append([written("m1", "a"), written("m2", "b"), updated("m1", 2, "a")])
    assert [e.position for e in event_log.query(EventFilter(Scope(agent_id="a")))] == [1, 3]
    assert [e.position for e in event_log.query(EventFilter(memory_id="m1"))] == [1, 3]
    assert [e.position for e in event_log.query(EventFilter(actor="b"))] == [2]
    assert [e.position for e in event_log.query(EventFilter(Scope(group_id="g")), after=1,
                                                reverse=True)] == [3, 2]
    latest = event_log.latest("m1")
    assert latest is not None and latest.version == 2
    assert event_log.query(EventFilter(Scope(agent_id="nobody"))) == []


def test_wait_wakes_on_append(event_log: EventLog) -> None:
    assert event_log.wait(0, timeout=0.05) is False
    timer = threading.Timer(0.1, lambda: event_log.append([written("m1")]))
    timer.start()
    started = time.monotonic()
    assert event_log.wait(0, timeout=10) is True
    assert time.monotonic() - started < 5
    timer.join()


def test_redact_keeps_the_chain(event_log: EventLog) -> None:
    event_log.append([written("m1", value="secret"), written("m2")])
    event_log.append([forgotten("m1", 2)])
    assert event_log.redact([1]) == 1
    assert event_log.redact([1]) == 0
    first = event_log.read()[0]
    assert first.payload is None and first.data is None
    assert event_log.verify() == 3


def test_the_change_stamp_changes_with_every_append_and_redaction(event_log: EventLog) -> None:
    """A log that gives a change stamp (projectors skip a catch-up while it holds) gives a
    new one after anything is written to it."""
    stamps = [event_log.change_stamp()]
    if stamps[0] is None:
        return  # this log cannot tell cheaply: projectors always look
    event_log.append([written("m1", value="secret")])
    stamps.append(event_log.change_stamp())
    assert event_log.change_stamp() == stamps[-1]  # nothing written: the same
    event_log.append([forgotten("m1", 2)])
    stamps.append(event_log.change_stamp())
    assert event_log.redact([1]) == 1
    stamps.append(event_log.change_stamp())
    assert len(set(stamps)) == len(stamps)


def test_a_payload_removed_without_a_forget_event_is_found(event_log: EventLog) -> None:
    event_log.append([written("m1"), written("m2", value="secret"), written("m3")])
    event_log.redact([2])  # the log's own redaction, with no forget event: as a tamperer would
    result = event_log.check()
    assert (result.ok, result.position) == (False, 2)
    assert "without a forget event" in (result.reason or "")
    assert not event_log.extends(event_log.digest())


def test_concurrent_appenders_in_threads(event_log: EventLog) -> None:
    def worker(n: int) -> None:
        for i in range(20):
            event_log.append([written(f"m{n}-{i}")])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.position for e in event_log.read()] == list(range(1, 81))
    assert event_log.verify() == 80


def test_tampering_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = SQLEventLog(f"sqlite:///{path}")
    log.append([written("m1"), written("m2"), written("m3")])
    log.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE memswarm_events SET actor = 'mallory' WHERE position = 2")
    log = SQLEventLog(f"sqlite:///{path}")
    with pytest.raises(IntegrityError) as info:
        log.verify()
    assert info.value.position == 2
    log.close()


def test_garbage_file_is_a_corrupt_log(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(CorruptLogError):
        SQLEventLog(f"sqlite:///{path}")
    assert path.read_bytes() == b"this is not a database at all" * 200


def test_another_programs_database_is_foreign(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    with pytest.raises(ForeignStoreError):
        SQLEventLog(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert tables == ["customers"]
        assert conn.execute("SELECT name FROM customers").fetchall() == [("ada",)]


def test_reopening_sees_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = SQLEventLog(url)
    recorded = log.append([written("m1"), written("m2")])
    log.close()
    again = SQLEventLog(url)
    assert again.read() == recorded
    assert again.verify() == 2
    again.close()


@pytest.mark.parametrize("where", [
    EventFilter(Scope(agent_id="a")), EventFilter(Scope(group_id="g")),
    EventFilter(Scope(context_id="c")), EventFilter(memory_id="m1"), EventFilter(actor="a"),
    EventFilter(Scope(agent_id="a", group_id="g")),
])
def test_scoped_queries_use_an_index_not_a_full_scan(tmp_path: Path, where: EventFilter) -> None:
    log = SQLEventLog(f"sqlite:///{tmp_path / 'log.db'}")
    log.append([written(f"m{i}", f"agent{i % 50}") for i in range(500)])
    statements: list[str] = []  # as SQLite runs them, their parameters in the text
    log._engine.dispose()  # the next connection is made anew, and traced
    sa_event.listen(log._engine, "connect",
                    lambda dbapi, _record: dbapi.set_trace_callback(statements.append))
    log.query(where, after=0)
    sql = next(s for s in reversed(statements) if s.startswith("SELECT"))
    raw = sqlite3.connect(tmp_path / "log.db")
    plan = " ".join(row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}"))
    raw.close()
    log.close()
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan


def test_group_commit_keeps_each_batch_independent(tmp_path: Path) -> None:
    log = SQLEventLog(f"sqlite:///{tmp_path / 'log.db'}")
    first = written("m1")
    log.append([first])
    batches = {"update": [updated("m1", 2)], "stale": [updated("m1", 2)],
               "new": [written("m2"), written("m3")], "retry": [first]}
    outcome: dict[str, object] = {}

    def append(name: str) -> None:
        try:
            outcome[name] = log.append(batches[name])
        except VersionConflictError as exc:
            outcome[name] = exc

    with log._lock:  # hold the writer so that the four appends queue up as one group
        threads = [threading.Thread(target=append, args=(n,)) for n in batches]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(log._queue) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(log._queue) == 4
    for t in threads:
        t.join()
    racers = [outcome["update"], outcome["stale"]]
    assert sum(isinstance(r, VersionConflictError) for r in racers) == 1
    (won,) = [r for r in racers if isinstance(r, list)]
    new = [e.position for e in outcome["new"]]  # type: ignore[attr-defined]
    assert sorted([won[0].position, *new]) == [2, 3, 4] and new[1] == new[0] + 1
    assert [e.position for e in outcome["retry"]] == [1]  # type: ignore[attr-defined]
    assert log.head() == 4 and log.verify() == 4
    log.close()


# One step of several writers on one store: (writer, what it appends). "new" is a new memory,
# "batch" two, "update" the next version of a memory, "stale" a version already taken, "retry"
# an event recorded before, "expected" a condition on the head the writer reads first.
STEPS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(
    ["new", "batch", "update", "stale", "retry", "expected"])), min_size=1, max_size=25)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
@settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
def test_writers_taking_turns_on_one_store_each_continue_the_chain(
        request: pytest.FixtureRequest, tmp_path: Path, store: str,
        steps: list[tuple[int, str]]) -> None:
    """Each SQL log object appends after the head it last saw without reading it: whatever
    the other objects on the store wrote in between, every append lands at the true head
    (gapless, the chain verifies) and gets the answer a fresh read of the head would give."""
    if store == "sqlite":
        url, prefix = f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}", ""
    else:
        url, prefix = request.getfixturevalue("postgres_url"), f"t{uuid.uuid4().hex[:8]}_"
    writers = [SQLEventLog(url, table_prefix=prefix) for _ in range(3)]
    recorded: list[NewEvent] = []
    versions: dict[str, int] = {}
    try:
        for n, (who, what) in enumerate(steps):
            log, head = writers[who], len(recorded)
            if what in ("update", "stale") and versions:
                memory_id = sorted(versions)[n % len(versions)]
                version = versions[memory_id] + (what == "update")
                new = [updated(memory_id, version)]
            elif what == "retry" and recorded:
                new = [recorded[n % len(recorded)]]
            else:
                new = [written(f"m{n}-{i}") for i in range(2 if what == "batch" else 1)]
            if what == "stale" and versions:
                with pytest.raises(VersionConflictError):
                    log.append(new)
                continue
            got = log.append(new, expected_head=head if what == "expected" else None)
            if what == "retry" and recorded:
                assert [e.position for e in got] == [recorded.index(new[0]) + 1]
                continue
            assert [e.position for e in got] == list(range(head + 1, head + 1 + len(new)))
            recorded += new
            for e in new:
                versions[e.memory_id or ""] = e.version or 0
        with pytest.raises(HeadConflictError):
            writers[0].append([written("late")], expected_head=len(recorded) - 1)
        for log in writers:
            assert log.head() == len(recorded)
            assert [e.event_id for e in log.read()] == [e.event_id for e in recorded]
        assert writers[1].verify() == len(recorded)
    finally:
        for log in writers:
            log.close()


class _Copies:
    """Copies of a log, put back while its writers stay open: on SQLite, files made and put
    back with SQLite's backup API (as ``sqlite3 FILE ".restore COPY"`` does); on PostgreSQL,
    the table's rows, and in a bucket, the batch objects, put back in place of those there."""

    def __init__(self, request: pytest.FixtureRequest, store: str, tmp_path: Path) -> None:
        self.store, self.directory = store, tmp_path
        self.rows: dict[str, list[dict[str, object]]] = {}
        self.objects: dict[str, dict[str, bytes]] = {}
        self.engine: sa.Engine | None = None
        if store == "sqlite":
            self.url, self.prefix = f"sqlite:///{tmp_path / 'log.db'}", ""
        elif store == "postgres":
            self.url = request.getfixturevalue("postgres_url")
            self.prefix = f"t{uuid.uuid4().hex[:8]}_"
            self.engine = sa.create_engine(self.url)
        else:
            self.client = request.getfixturevalue("gcs_client")
            self.bucket = self.client.bucket(request.getfixturevalue("gcs_bucket"))
            self.prefix = request.getfixturevalue("gcs_prefix")

    def log(self) -> EventLog:
        if self.store == "gcs":
            return GCSEventLog(self.bucket.name, self.prefix, client=self.client)
        return SQLEventLog(self.url, table_prefix=self.prefix)

    def take(self, name: str) -> str:
        if self.store == "sqlite":
            copy_database(self.url[len("sqlite:///"):], self.directory / name)
        elif self.engine is not None:
            with self.engine.begin() as conn:
                table = sa.Table(f"{self.prefix}events", sa.MetaData(), autoload_with=conn)
                self.rows[name] = [dict(r._mapping) for r in conn.execute(sa.select(table))]
        else:
            self.objects[name] = {b.name: b.download_as_bytes() for b in
                                  self.client.list_blobs(self.bucket, prefix=self.prefix)}
        return name

    def put_back(self, name: str) -> None:
        if self.store == "sqlite":
            copy_database(self.directory / name, self.url[len("sqlite:///"):])
        elif self.engine is not None:
            with self.engine.begin() as conn:
                table = sa.Table(f"{self.prefix}events", sa.MetaData(), autoload_with=conn)
                conn.execute(table.delete())
                conn.execute(table.insert(), self.rows[name])
        else:
            for blob in self.client.list_blobs(self.bucket, prefix=self.prefix):
                blob.delete()
            for object_name, data in self.objects[name].items():
                self.bucket.blob(object_name).upload_from_string(data)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


@pytest.mark.parametrize("store", ["sqlite", "postgres", "gcs"])
@pytest.mark.parametrize("copy_is", ["shorter", "another history"])
def test_a_writer_open_across_a_restore_appends_after_the_restored_head(
        request: pytest.FixtureRequest, tmp_path: Path, store: str, copy_is: str) -> None:
    """A log put back from a copy while a writer stays open, whatever head that writer saw
    last (the copy is shorter; or as long, but another history), gets the writer's next
    append right after the copy's head, chained to it: never a gap, never a broken link."""
    copies = _Copies(request, store, tmp_path)
    writer = copies.log()
    try:
        writer.append([written(f"m{i}") for i in range(3)])
        copy = copies.take("base")
        if copy_is == "another history":  # the same length, other events after the base
            other = copies.log()
            other.append([written("other-1"), written("other-2")])
            other.close()
            copy = copies.take("other")
            copies.put_back("base")
        writer.append([written("lost-1"), written("lost-2")])  # the head it saw: 5
        assert writer.head() == 5
        copies.put_back(copy)
        kept = 5 if copy_is == "another history" else 3
        assert writer.head() == kept
        assert [e.position for e in writer.append([written("after")])] == [kept + 1]
        fresh = copies.log()  # the store as anyone reads it afresh
        assert [e.event_id for e in fresh.read()] == [e.event_id for e in writer.read()]
        assert [e.position for e in fresh.read()] == list(range(1, kept + 2))
        assert fresh.verify() == kept + 1
        fresh.close()
    finally:
        writer.close()
        copies.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kept=st.integers(0, 4), lost=st.integers(1, 4), others=st.integers(0, 5),
       appends=st.lists(st.tuples(st.integers(0, 1), st.integers(1, 3)), min_size=1,
                        max_size=4))
def test_any_restore_under_open_writers_leaves_one_gapless_chain(
        tmp_path: Path, kept: int, lost: int, others: int,
        appends: list[tuple[int, int]]) -> None:
    """For any copy (``kept`` events, then ``others`` of its own history) put back under two
    writers that appended ``lost`` events after it, whatever each writer saw last: the
    writers' next appends (``appends``: writer, batch size) follow the copy's head, and the
    store reads as the copy's events then theirs, gapless, the chain verified."""
    directory = tmp_path / uuid.uuid4().hex
    directory.mkdir()
    url = f"sqlite:///{directory / 'log.db'}"
    writers = [SQLEventLog(url), SQLEventLog(url)]
    try:
        if kept:
            writers[0].append([written(f"kept-{i}") for i in range(kept)])
        copy_database(directory / "log.db", directory / "copy.db")
        if others:
            other = SQLEventLog(f"sqlite:///{directory / 'copy.db'}")
            other.append([written(f"other-{i}") for i in range(others)])
            other.close()
        for i in range(lost):  # each writer's head taken unread: somewhere in the lost events
            writers[i % 2].append([written(f"lost-{i}")])
        copy_database(directory / "copy.db", directory / "log.db")
        copy_log = SQLEventLog(f"sqlite:///{directory / 'copy.db'}", create=False)
        expected = [e.event_id for e in copy_log.read()]
        copy_log.close()
        for n, (who, size) in enumerate(appends):
            got = writers[who].append([written(f"after-{n}-{i}") for i in range(size)])
            assert [e.position for e in got] == list(range(len(expected) + 1,
                                                           len(expected) + size + 1))
            expected += [e.event_id for e in got]
        fresh = SQLEventLog(url, create=False)
        assert [e.event_id for e in fresh.read()] == expected
        assert fresh.verify() == len(expected)
        fresh.close()
    finally:
        for log in writers:
            log.close()


def test_open_log_chooses_the_store_by_url(tmp_path: Path) -> None:
    memory = open_log("memory://")
    assert isinstance(memory, InMemoryEventLog) and open_log("memory://") is not memory
    path = tmp_path / "log.db"
    with pytest.raises(LogNotFoundError):
        open_log(f"sqlite:///{path}", create=False)
    assert not path.exists()  # nothing made
    made = open_log(f"sqlite:///{path}")
    assert isinstance(made, SQLEventLog)
    made.append([written("m")])
    made.close()
    reopened = open_log(f"sqlite:///{path}", create=False)
    assert reopened.head() == 1
    reopened.close()
    for bad in ("memory://somewhere", "gs://", "gs:///prefix"):
        with pytest.raises(InvalidInputError):
            open_log(bad)


def test_open_log_opens_a_bucket_prefix(gcs_bucket: str, gcs_prefix: str,
                                        monkeypatch: pytest.MonkeyPatch,
                                        gcs_client: object) -> None:
    monkeypatch.setattr("memswarm_es.log.gcs.storage.Client", lambda: gcs_client)
    with pytest.raises(LogNotFoundError):
        open_log(f"gs://{gcs_bucket}/{gcs_prefix}", create=False)
    made = open_log(f"gs://{gcs_bucket}/{gcs_prefix}")
    assert isinstance(made, GCSEventLog) and made.prefix == gcs_prefix
    made.append([written("m")])
    assert open_log(f"gs://{gcs_bucket}/{gcs_prefix}", create=False).head() == 1


def test_a_broken_chain_is_still_an_integrity_error() -> None:
    """The error's new name; ``except IntegrityError`` (the earlier name) still catches it."""
    assert ChainBrokenError is IntegrityError
    log = InMemoryEventLog()
    log.append([written("m")])
    with pytest.raises(IntegrityError):
        log.adopt_identity("another")
