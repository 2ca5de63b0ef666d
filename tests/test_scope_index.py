"""The SQL log's scope index (``memswarm_es.log.scope_index``): appends never write it, and a
query by scope or actor answers exactly what a filter over the whole log does, whatever part
of the log the index covers (none, some, all), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memswarm_es.events import EventType, NewEvent
from memswarm_es.log import EventFilter, SQLEventLog, scope_index
from memswarm_es.scopes import Scope

NAMES = ["a", "b", "c"]


def event(agent: str, group: str, context: str, actor: str) -> NewEvent:
    return NewEvent.create(EventType.MEMORY_WRITTEN, Scope(agent, group, context), actor,
                           {"value": "v", "metadata": {}}, memory_id=str(uuid.uuid4()),
                           version=1)


def scoped(log: SQLEventLog) -> int:
    """The rows of the log's scope index."""
    with log.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {log.table_prefix}scopes"))
                   .scalar_one())


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{directory}/log.db"
    else:
        yield request.getfixturevalue("postgres_url")


def new_log(url: str) -> SQLEventLog:
    if url.startswith("sqlite"):  # a new file each time: hypothesis runs many examples
        url = url.replace("log.db", f"log-{uuid.uuid4().hex[:8]}.db")
        return SQLEventLog(url)
    return SQLEventLog(url, table_prefix=f"s{uuid.uuid4().hex[:8]}_")


scopes = st.tuples(*(st.sampled_from(NAMES) for _ in range(4)))
filters = st.builds(
    lambda agent, group, context, actor: EventFilter(Scope(agent, group, context), actor=actor),
    *(st.none() | st.sampled_from(NAMES) for _ in range(4)),
).filter(lambda f: bool(f.scope.parts()) or f.actor is not None)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(scopes, min_size=1, max_size=6), min_size=1, max_size=6),
       queries=st.lists(st.tuples(filters, st.integers(0, 30), st.none() | st.integers(1, 30),
                                  st.none() | st.integers(1, 5), st.booleans()),
                        min_size=1, max_size=4),
       lag=st.integers(0, 8), step=st.integers(1, 5))
def test_a_scoped_query_is_a_filter_of_the_log_whatever_the_index_covers(
        url: str, monkeypatch: pytest.MonkeyPatch, batches: list[list[tuple[str, ...]]],
        queries: list[tuple[EventFilter, int, int | None, int | None, bool]], lag: int,
        step: int) -> None:
    monkeypatch.setattr(scope_index, "LAG", lag)
    monkeypatch.setattr(scope_index, "STEP", step)
    log = new_log(url)
    try:
        for batch in batches:
            log.append([event(*parts) for parts in batch])
            everything = log.read()
            for where, after, until, limit, reverse in queries:
                where = EventFilter(where.scope, actor=where.actor, until_position=until)
                expected = [e for e in everything if e.position > after and where.matches(e)]
                if reverse:
                    expected.reverse()
                got = log.query(where, after=after, limit=limit, reverse=reverse)
                assert got == expected[:limit]
                assert log.head() - scoped(log) <= lag  # filled when it lagged further
    finally:
        log.close()


def test_appends_never_write_the_index_and_a_lagging_one_is_filled(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scope_index, "LAG", 10)
    monkeypatch.setattr(scope_index, "STEP", 7)
    log = new_log(url)
    for i in range(30):
        log.append([event(NAMES[i % 3], "g", "c", NAMES[i % 3])])
    assert scoped(log) == 0
    log.query(EventFilter(memory_id="m"))  # a memory's events: through the events' own key
    log.query(EventFilter())
    assert scoped(log) == 0
    assert len(log.query(EventFilter(Scope(agent_id="a")))) == 10
    assert scoped(log) == 30
    log.append([event("a", "g", "c", "a") for _ in range(5)])
    assert len(log.query(EventFilter(actor="a"))) == 15  # 5 past the index, scanned
    assert scoped(log) == 30
    log.close()


def test_a_log_made_with_indexes_on_its_events_loses_them_and_keeps_its_answers(
        tmp_path: Path) -> None:
    """Logs made before the scope index had one index per scope in the events table, which
    every append paid for: opening one drops them and indexes the scopes beside it."""
    path = tmp_path / "log.db"
    log = SQLEventLog(f"sqlite:///{path}")
    log.append([event(NAMES[i % 3], "g", "c", "a") for i in range(20)])
    log.close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE memswarm_scopes")
    for column in scope_index.COLUMNS:
        raw.execute(f"CREATE INDEX memswarm_events_{column} "
                    f"ON memswarm_events ({column}, position)")
    raw.commit()
    log = SQLEventLog(f"sqlite:///{path}")
    indexes = {row[0] for row in raw.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'memswarm_events'")}
    raw.close()
    assert not any(name.startswith("memswarm_events_") for name in indexes), indexes
    assert [e.position for e in log.query(EventFilter(Scope(agent_id="b")))] == [2, 5, 8, 11,
                                                                                 14, 17, 20]
    log.close()


def test_a_read_only_log_answers_scoped_queries_by_scanning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(scope_index, "LAG", 3)
    path = tmp_path / "log.db"
    log = SQLEventLog(f"sqlite:///{path}")
    log.append([event(NAMES[i % 3], "g", "c", "a") for i in range(12)])
    log.close()
    read_only = SQLEventLog(f"sqlite:///file:{path}?mode=ro&uri=true", create=False)
    assert [e.position for e in read_only.query(EventFilter(Scope(agent_id="c")))] == [3, 6,
                                                                                       9, 12]
    read_only.close()
    assert "the scope index is not filled" in caplog.text


def steps_of_a_scoped_query(path: Path, events: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """SQLite's virtual machine steps (in hundreds) of a query for the 10 events of a rare
    agent, on a log of ``events`` events whose last 100 the index does not cover yet."""
    monkeypatch.setattr(scope_index, "LAG", 0)
    log = SQLEventLog(f"sqlite:///{path}")
    rare = set(range(0, events - 100, (events - 100) // 10))
    log.append([event("rare" if i in rare else NAMES[i % 3], "g", "c", "a")
                for i in range(events - 100)])
    log.query(EventFilter(Scope(agent_id="a")))  # fills the index
    log.append([event("b", "g", "c", "a") for _ in range(100)])
    monkeypatch.setattr(scope_index, "LAG", 1000)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    connection = log.readers.run(lambda cursor: cursor.connection)
    connection.set_progress_handler(count, 100)
    for until in (None, events - 50):
        found = log.query(EventFilter(Scope(agent_id="rare"), until_position=until))
        assert len(found) == 10
    connection.set_progress_handler(None, 100)
    log.close()
    return steps[0]


def test_a_scoped_query_costs_what_it_finds_not_the_log_length(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither part of a scoped query walks the log: the indexed part seeks the scope, and the
    part the index does not cover starts at its last position (not at ``after``)."""
    small = steps_of_a_scoped_query(tmp_path / "small.db", 1_000, monkeypatch)
    large = steps_of_a_scoped_query(tmp_path / "large.db", 20_000, monkeypatch)
    assert large <= 2 * small + 10, (small, large)
