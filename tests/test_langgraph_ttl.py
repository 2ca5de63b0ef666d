"""TTL in MemSwarmStore: expiry recorded in the log, refreshed by reads that ask for it,
expired items deleted by a sweep (a delete event each), with LangGraph's own ``SqliteStore``
as the oracle of what a sweep deletes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.store.base import GetOp, PutOp, SearchOp
from langgraph.store.sqlite import SqliteStore

from memswarm_es import InMemorySharedMemory, SQLiteSharedMemory
from memswarm_es.errors import InvalidValueError
from memswarm_es.events import EventType, now_micros
from memswarm_es.integrations.langgraph import MemSwarmStore
from memswarm_es.integrations.ttl import (
    EXPIRES_AT,
    REFRESH_SLACK_SHARE,
    REFRESH_SLACK_US,
    TTL_MINUTES,
    expiring,
    refreshes,
)
from memswarm_es.log import EventFilter
from memswarm_es.namespaces import keyed_memory_id
from tests.test_runner import eventually

TTL = 0.1  # minutes: SqliteStore's clock (CURRENT_TIMESTAMP) counts whole seconds


def test_a_sweep_deletes_what_sqlite_store_deletes_and_a_refresh_postpones_it(
        tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "langgraph.db", check_same_thread=False,
                           isolation_level=None)
    # (SqliteStore refreshes only where its config says refresh_on_read, whatever an op asks;
    # the ops below say whether they refresh)
    oracle = SqliteStore(conn, ttl={"refresh_on_read": True})
    oracle.setup()
    memory = SQLiteSharedMemory(str(tmp_path / "swarm.db"))
    ours = MemSwarmStore(memory, ttl={"refresh_on_read": True})
    stores = (ours, oracle)

    def answers(op: GetOp | SearchOp) -> list[object]:
        found = [store.batch([op])[0] for store in stores]
        return [None if f is None else sorted(i.key for i in f) if isinstance(f, list)
                else f.key for f in found]

    start = time.monotonic()
    for store in stores:
        store.batch([PutOp(("n",), "a", {"v": 1}, ttl=TTL), PutOp(("n",), "b", {"v": 2}),
                     PutOp(("n",), "c", {"v": 3}, ttl=TTL)])
        assert store.sweep_ttl() == 0  # nothing expired yet
    time.sleep(max(0.0, start + 3 - time.monotonic()))
    # a read that does not refresh changes nothing; one that does restarts c's TTL
    assert answers(GetOp(("n",), "a", refresh_ttl=False)) == ["a", "a"]
    assert answers(GetOp(("n",), "c", refresh_ttl=True)) == ["c", "c"]
    time.sleep(max(0.0, start + 7.5 - time.monotonic()))
    assert [store.sweep_ttl() for store in stores] == [1, 1]  # a: put 7.5 s ago, TTL 6 s
    assert answers(SearchOp(("n",), refresh_ttl=False)) == [["b", "c"], ["b", "c"]]
    time.sleep(max(0.0, start + 10.5 - time.monotonic()))
    assert [store.sweep_ttl() for store in stores] == [1, 1]  # c: refreshed 7.5 s ago
    assert answers(SearchOp(("n",), refresh_ttl=False)) == [["b"], ["b"]]

    # every step is an event: the TTL in the put, the refresh, the sweep's delete
    a, c = (memory.log.query(EventFilter(memory_id=keyed_memory_id(("n",), key, 1)))
            for key in "ac")
    assert [e.type for e in a] == [EventType.MEMORY_WRITTEN, EventType.MEMORY_DELETED]
    assert [e.type for e in c] == [EventType.MEMORY_WRITTEN, EventType.MEMORY_UPDATED,
                                   EventType.MEMORY_DELETED]
    assert c[1].data is not None and c[1].data["metadata"][TTL_MINUTES] == TTL
    assert memory.verify().ok
    memory.close()
    conn.close()


def test_a_put_sets_or_clears_the_ttl_and_reads_refresh_by_default() -> None:
    memory = InMemorySharedMemory()
    store = MemSwarmStore(memory, ttl={"default_ttl": 1.0})
    store.put(("n",), "k", {"v": 1})  # the default TTL
    first = memory.get_by_key(("n",), "k")
    assert first is not None and first.metadata[TTL_MINUTES] == 1.0
    assert first.metadata[EXPIRES_AT] > time.time_ns() // 1000 + 50_000_000
    store.get(("n",), "k")  # within 1% of the TTL (0.6 s) of the put: nothing to refresh
    assert memory.get_by_key(("n",), "k").version == 1  # type: ignore[union-attr]
    time.sleep(0.7)
    for _ in range(5):  # refresh_on_read defaults to True: one update of the expiry
        store.get(("n",), "k")
    refreshed = memory.get_by_key(("n",), "k")
    assert refreshed is not None and refreshed.version == 2
    assert refreshed.metadata[EXPIRES_AT] >= first.metadata[EXPIRES_AT] + 600_000
    store.get(("n",), "k", refresh_ttl=False)
    store.search(("n",), refresh_ttl=False)
    assert memory.get_by_key(("n",), "k").version == 2  # type: ignore[union-attr]
    store.put(("n",), "k", {"v": 1}, ttl=None)  # the same value, without a TTL: cleared
    cleared = memory.get_by_key(("n",), "k")
    assert cleared is not None and cleared.version == 3 and not cleared.metadata
    store.put(("n",), "k", {"v": 1}, ttl=None)  # the same again: nothing to record
    store.get(("n",), "k")  # nothing to refresh
    assert memory.get_by_key(("n",), "k").version == 3  # type: ignore[union-attr]
    for bad in (-1, float("nan"), float("inf"), 1e12, True, "5"):
        with pytest.raises(InvalidValueError):
            store.put(("n",), "k", {"v": 2}, ttl=bad)  # type: ignore[arg-type]
    assert memory.get_by_key(("n",), "k").version == 3  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(minutes=st.floats(0.1, 1e7), elapsed=st.one_of(st.floats(0, 0.9), st.floats(1.1, 5)))
def test_a_read_refreshes_a_ttl_only_once_its_slack_has_passed(minutes: float,
                                                               elapsed: float) -> None:
    """Whatever the TTL, a read restarts it once a share of it (at most a minute) has passed
    since it was set, and never before: reads in quick succession record one refresh."""
    memory = InMemorySharedMemory()
    ttl_us = minutes * 60_000_000
    set_us_ago = int(elapsed * min(ttl_us * REFRESH_SLACK_SHARE, REFRESH_SLACK_US))
    memory.put(("n",), "k", {"v": 1}, expiring({}, minutes, now_micros() - set_us_ago))
    entry = memory.get_by_key(("n",), "k")
    assert entry is not None
    assert len(refreshes([entry])) == (elapsed > 1)


FOREIGN = st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.integers(-2**63, 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.lists(st.integers(), max_size=2))


@settings(max_examples=60, deadline=None)
@given(minutes=FOREIGN, at=FOREIGN)
def test_ttl_metadata_set_by_another_writer_stops_no_read_and_no_sweep(minutes: object,
                                                                       at: object) -> None:
    """Whatever another writer put in the TTL fields of a memory's metadata, a read that
    refreshes answers and records only a refresh a put could have made, and a sweep deletes
    the memory only if its expiry is a time (an int, not a bool) already past."""
    memory = InMemorySharedMemory()
    memory.put(("n",), "k", {"v": 1}, {TTL_MINUTES: minutes, EXPIRES_AT: at})
    store = MemSwarmStore(memory)
    item = store.get(("n",), "k", refresh_ttl=True)
    assert item is not None and item.value == {"v": 1}
    after = memory.get_by_key(("n",), "k")
    assert after is not None
    readable_ttl = type(minutes) in (int, float) and 0 <= minutes < 1e11  # type: ignore[operator]
    if after.version == 2:  # refreshed: only a TTL a put could give, set anew from now
        assert readable_ttl and after.metadata[TTL_MINUTES] == minutes
        assert type(after.metadata[EXPIRES_AT]) is int
    else:
        assert after.metadata == {TTL_MINUTES: minutes, EXPIRES_AT: at}
    past = type(after.metadata[EXPIRES_AT]) is int and after.metadata[EXPIRES_AT] < now_micros()
    assert store.sweep_ttl() == int(past)


def test_an_agent_refreshes_and_sweeps_only_what_it_may_change() -> None:
    memory = InMemorySharedMemory()
    memory.join_group("owner", "team")
    memory.join_group("reader", "team")
    owner = MemSwarmStore(memory.agent("owner"))
    reader = MemSwarmStore(memory.agent("reader"))
    # a TTL of 60 ms, the memory readable by the team and writable by the owner alone
    memory.agent("owner").put(("n",), "k", {"v": 1}, expiring({}, 0.001, now_micros()),
                              readable_by=["group:team"])
    assert reader.get(("n",), "k") is not None  # its refresh is refused: skipped, no error
    assert memory.get_by_key(("n",), "k").version == 1  # type: ignore[union-attr]
    time.sleep(0.1)
    assert reader.sweep_ttl() == 0  # it may not delete the owner's memory
    assert owner.sweep_ttl() == 1
    assert memory.get_by_key(("n",), "k") is None


def test_the_sweeper_thread_sweeps_until_stopped(tmp_path: Path) -> None:
    with MemSwarmStore.from_conn_string(f"sqlite:///{tmp_path / 's.db'}") as plain:
        assert plain.start_ttl_sweeper().done()  # no TTL config: no sweeper
    with MemSwarmStore.from_conn_string(f"sqlite:///{tmp_path / 's.db'}",
                                        ttl={"sweep_interval_minutes": 1}) as store:
        store.put(("n",), "gone", {"v": 1}, ttl=0.002)  # 120 ms
        store.put(("n",), "kept", {"v": 2})
        future = store.start_ttl_sweeper(sweep_interval_minutes=0.003)  # every 180 ms
        assert store.start_ttl_sweeper() is future  # one sweeper
        eventually(lambda: store.get(("n",), "gone", refresh_ttl=False) is None, timeout=10,
                   what="the sweeper to delete the expired item")
        assert store.get(("n",), "kept") is not None
        assert store.stop_ttl_sweeper(timeout=10)
        assert future.result(timeout=1) is None
