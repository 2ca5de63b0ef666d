"""Time travel and audit: as_of equals the fold of a prefix of the log, for every prefix, with
and without snapshots; times map to the positions recorded at them; audit pages by index."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from memswarm_es import InMemorySharedMemory, MemoryNotFoundError, SQLiteSharedMemory
from memswarm_es.errors import InvalidInputError
from memswarm_es.events import EventType, NewEvent
from memswarm_es.memory import SharedMemory
from memswarm_es.scopes import Scope
from projections.fold import View, fold, select

OPS = st.lists(
    st.tuples(st.sampled_from(["write", "update", "delete", "forget"]),
              st.sampled_from(["a", "b", "a:b"]), st.sampled_from([None, "g", "%"]),
              st.integers(0, 30)),
    min_size=1, max_size=40)


def run(mem: SharedMemory, ops: list[tuple[str, str, str | None, int]]) -> None:
    ids: list[str] = []
    for op, agent, group, n in ops:
        try:
            if op == "write" or not ids:
                ids.append(mem.write_scope(f"{agent}-{n}", metadata={"agent_id": agent,
                                                                     "group_id": group}))
            elif op == "update":
                mem.update(ids[n % len(ids)], {"n": n})
            elif op == "delete":
                mem.delete(ids[n % len(ids)])
            else:
                mem.forget(ids[n % len(ids)], reason=f"request {n}")
        except MemoryNotFoundError:
            pass


@settings(max_examples=40, deadline=None)
@given(ops=OPS, every=st.sampled_from([1, 3, 7, 10_000]))
def test_as_of_every_position_equals_the_fold_of_that_prefix(ops, every: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mem = SQLiteSharedMemory(f"{tmp}/t.db", synchronous="OFF", snapshot_every=every)
        run(mem, ops)
        events = mem.log.read()
        for p in [*range(len(events) + 1), *reversed(range(len(events) + 1))]:
            past = mem.as_of(p)
            expected = fold(events[:p])
            assert past.position == p
            assert past.read_scope() == select(expected.entries.values(), Scope())
            assert past.read_scope(agent_id="a:b") == select(expected.entries.values(),
                                                             Scope(agent_id="a:b"))
        assert mem.as_of(len(events)).read_scope() == mem.read_scope()
        mem.close()


@settings(max_examples=20, deadline=None)
@given(ops=OPS)
def test_as_of_time_agrees_with_the_positions_recorded_then(ops) -> None:
    mem = InMemorySharedMemory(snapshot_every=4)
    run(mem, ops)
    events = mem.log.read()
    for event in events:
        t = event.recorded_at
        last_at_t = max(e.position for e in events if e.recorded_at <= t)
        past = mem.as_of(time=t)
        assert past.position == last_at_t
        assert past.recorded_at == events[last_at_t - 1].recorded_at
    before = events[0].recorded_at - timedelta(microseconds=1)
    assert mem.as_of(time=before).read_scope() == []
    assert mem.as_of(time=events[-1].recorded_at + timedelta(days=1)).position == len(events)


def test_stale_or_damaged_snapshots_are_rebuilt(tmp_path: Path) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "s.db"), snapshot_every=5)
    ids = [mem.write_scope(i, metadata={"agent_id": "a"}) for i in range(23)]
    expected = mem.as_of(22).read_scope()
    store = mem.time_machine.store
    assert store.nearest(22) == (20, mem.log.read(19, 1)[0].hash)
    assert store.save(View({}, 20), b"\x00" * 32, store.epoch())  # does not match the log
    assert mem.as_of(22).read_scope() == expected
    assert store.nearest(22)[1] == mem.log.read(19, 1)[0].hash
    mem.forget(ids[0], reason="test")
    assert store.nearest(22) is None  # every snapshot that held it is gone
    assert mem.as_of(22).get(ids[0]).value is None
    mem.close()


def test_bad_time_travel_input() -> None:
    mem = InMemorySharedMemory()
    mem.write_scope("x", metadata={"agent_id": "a"})
    with pytest.raises(InvalidInputError):
        mem.as_of()
    with pytest.raises(InvalidInputError):
        mem.as_of(-1)
    with pytest.raises(InvalidInputError):
        mem.as_of(1, time=mem.log.read()[0].recorded_at)
    with pytest.raises(InvalidInputError):
        mem.as_of(time=mem.log.read()[0].recorded_at.replace(tzinfo=None))
    assert mem.as_of(99).position == 1


@pytest.fixture(params=["memory", "sqlite"])
def mem(request: pytest.FixtureRequest, tmp_path: Path) -> SharedMemory:
    if request.param == "memory":
        return InMemorySharedMemory()
    return SQLiteSharedMemory(str(tmp_path / "a.db"))


def test_audit_filters_and_pages(mem: SharedMemory) -> None:
    for i in range(30):
        mem.write_scope(i, metadata={"agent_id": f"a{i % 3}", "group_id": f"g{i % 2}"},
                        context_id="c" if i % 5 == 0 else None)
    m = mem.read_scope(agent_id="a0")[0].memory_id
    mem.update(m, "by the boss", actor="boss")
    events = mem.log.read()

    assert [e.position for e in mem.audit(actor="boss").events] == [31]
    assert [e.position for e in mem.audit(agent_id="a1", group_id="g0").events] == [
        e.position for e in events if e.scope.agent_id == "a1" and e.scope.group_id == "g0"]
    assert len(mem.audit(context_id="c").events) == 7  # six writes and the update of one
    pages, after = [], 0
    while True:
        page = mem.audit(group_id="g1", after=after, limit=4)
        pages.append(page.events)
        if page.next_after is None:
            break
        after = page.next_after
    flat = [e.position for p in pages for e in p]
    assert flat == [e.position for e in events if e.scope.group_id == "g1"]
    assert all(len(p) == 4 for p in pages[:-1])

    since, until = events[9].recorded_at, events[20].recorded_at
    window = mem.audit(since=since, until=until, limit=1000).events
    assert [e.position for e in window] == [
        e.position for e in events if since <= e.recorded_at < until]
    with pytest.raises(InvalidInputError):
        mem.audit(limit=0)
    with pytest.raises(InvalidInputError):
        mem.audit(since=since.replace(tzinfo=None))


def test_a_scope_whose_memories_have_events_in_other_scopes_is_read_from_the_whole_view(
        tmp_path: Path) -> None:
    """A scoped read in the past folds that scope's events alone; where a memory among them
    has an event naming another scope (a log written by another program), it folds the whole
    view instead, and still answers as the fold does. (Known gap: an event naming a scope
    outside the query is not seen, so ``Scope("a", "g")`` here would miss the update.)"""
    mem = SQLiteSharedMemory(str(tmp_path / "foreign.db"), snapshot_every=2)
    m = mem.write_scope("v1", metadata={"agent_id": "a", "group_id": "g"})
    mem.log.append([NewEvent.create(EventType.MEMORY_UPDATED, Scope("a", "h"), "x",
                                    {"value": "v2"}, memory_id=m, version=2)])
    mem.write_scope("other", metadata={"agent_id": "b"})
    events = mem.log.read()
    for p in range(len(events) + 1):
        expected = fold(events[:p]).entries.values()
        for scope in (Scope("a"), Scope("b")):
            past = mem.as_of(p)
            assert past.read_scope(**dict(scope.parts())) == select(expected, scope)
    assert mem.as_of(2).read_scope(agent_id="a")[0].value == "v2"
    mem.close()
