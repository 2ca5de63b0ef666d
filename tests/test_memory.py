"""The facade: scoped writes and reads, versions, conflicts, bad input, threads, seed names."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from memswarm_es import (
    HybridMemory,
    InMemorySharedMemory,
    MemoryNotFoundError,
    SharedMemory,
    SQLiteSharedMemory,
    VersionConflictError,
)
from memswarm_es.errors import (
    IdempotencyError,
    InvalidIdError,
    InvalidScopeError,
    InvalidValueError,
    ValueTooLargeError,
)
from memswarm_es.events import EventType
from projections.in_memory import InMemoryReadModel


@pytest.fixture(params=["memory", "sqlite"])
def mem(request: pytest.FixtureRequest, tmp_path: Path) -> SharedMemory:
    if request.param == "memory":
        return InMemorySharedMemory(max_value_bytes=10_000)
    return SQLiteSharedMemory(str(tmp_path / "m.db"), max_value_bytes=10_000)


def test_write_and_read_by_any_combination_of_scopes(mem: SharedMemory) -> None:
    a = mem.write_scope("a1", metadata={"agent_id": "a", "group_id": "g1", "tag": 1},
                        context_id="c1")
    b = mem.write_scope("b1", metadata={"agent_id": "b", "group_id": "g1"}, context_id="c2")
    c = mem.write_scope("a2", metadata={"agent_id": "a", "group_id": "g2"})
    ids = lambda entries: [e.memory_id for e in entries]  # noqa: E731
    assert ids(mem.read_scope(agent_id="a")) == [a, c]
    assert ids(mem.read_scope(group_id="g1")) == [a, b]
    assert ids(mem.read_scope(context_id="c2")) == [b]
    assert ids(mem.read_scope(agent_id="a", group_id="g1")) == [a]
    assert ids(mem.read_scope(agent_id="a", context_id="c2")) == []
    assert ids(mem.read_scope()) == [a, b, c]
    entry = mem.get(a)
    assert (entry.value, entry.metadata, entry.version) == ("a1", {"tag": 1}, 1)
    assert (entry.agent_id, entry.group_id, entry.context_id) == ("a", "g1", "c1")
    assert entry["id"] == a and entry["value"] == "a1"
    assert entry.position == 1 and entry.created_at == entry.updated_at
    assert entry.created_by == "operator"  # the unbound memory is the operator


def test_update_and_delete_keep_every_version(mem: SharedMemory) -> None:
    m = mem.write_scope({"plan": [1, 2]}, metadata={"agent_id": "a"})
    assert mem.update(m, {"plan": [3]}, expected_version=1, actor="b") == 2
    assert mem.update(m, metadata={"note": "x"}) == 3
    entry = mem.get(m)
    assert (entry.value, entry.metadata, entry.version) == ({"plan": [3]}, {"note": "x"}, 3)
    # an update without actor= is the caller's (the operator's), never the owner's
    assert (entry.position, entry.last_position, entry.updated_by) == (1, 3, "operator")
    assert mem.delete(m, expected_version=3) == 4
    assert mem.read_scope(agent_id="a") == []
    with pytest.raises(MemoryNotFoundError):
        mem.get(m)
    with pytest.raises(MemoryNotFoundError):
        mem.update(m, "again")
    history = mem.history(m)
    assert [(v.version, v.type) for v in history] == [
        (1, EventType.MEMORY_WRITTEN), (2, EventType.MEMORY_UPDATED),
        (3, EventType.MEMORY_UPDATED), (4, EventType.MEMORY_DELETED)]
    assert history[1].actor == "b" and history[0].value == {"plan": [1, 2]}
    assert history[-1].deleted


def test_stale_version_is_a_conflict_and_changes_nothing(mem: SharedMemory) -> None:
    m = mem.write_scope("v1", metadata={"agent_id": "a"})
    mem.update(m, "v2", expected_version=1)
    with pytest.raises(VersionConflictError) as info:
        mem.update(m, "lost", expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    with pytest.raises(VersionConflictError):
        mem.delete(m, expected_version=1)
    assert mem.get(m).value == "v2"


def test_retried_write_with_event_id_is_idempotent(mem: SharedMemory) -> None:
    first = mem.write_scope("x", metadata={"agent_id": "a"}, event_id="req-17")
    again = mem.write_scope("x", metadata={"agent_id": "a"}, event_id="req-17")
    assert first == again
    assert len(mem.read_scope(agent_id="a")) == 1
    assert mem.log.head() == 1


@pytest.mark.parametrize("call, error", [
    (lambda m: m.write_scope(object(), metadata={"agent_id": "a"}), InvalidValueError),
    (lambda m: m.write_scope({1, 2}), InvalidValueError),
    (lambda m: m.write_scope(2**70), InvalidValueError),
    (lambda m: m.write_scope("x", metadata={1: "one"}), InvalidValueError),
    (lambda m: m.write_scope("x", metadata=["agent_id"]), InvalidValueError),
    (lambda m: m.write_scope("x", metadata={"agent_id": ""}), InvalidIdError),
    (lambda m: m.write_scope("x", metadata={"agent_id": 7}), InvalidIdError),
    (lambda m: m.write_scope("x", metadata={"group_id": "a\x00b"}), InvalidIdError),
    (lambda m: m.write_scope("x", context_id=""), InvalidIdError),
    (lambda m: m.write_scope("x", metadata={"context_id": "c"}, context_id="d"),
     InvalidScopeError),
    (lambda m: m.write_scope("x" * 20_000), ValueTooLargeError),
    (lambda m: m.read_scope(team_id="t"), InvalidScopeError),
    (lambda m: m.read_scope(agent_id=""), InvalidIdError),
    (lambda m: m.get(""), InvalidIdError),
    (lambda m: m.update(None, "x"), InvalidIdError),
])
def test_bad_input_is_a_typed_error_and_writes_nothing(mem: SharedMemory, call, error) -> None:
    kept = mem.write_scope("kept", metadata={"agent_id": "a"})
    with pytest.raises(error):
        call(mem)
    assert mem.log.head() == 1
    assert mem.get(kept).value == "kept"
    assert mem.log.verify() == 1


def test_update_cannot_move_a_memory_to_another_scope(mem: SharedMemory) -> None:
    m = mem.write_scope("x", metadata={"agent_id": "a"})
    with pytest.raises(InvalidScopeError):
        mem.update(m, metadata={"agent_id": "b"})
    with pytest.raises(InvalidValueError):
        mem.update(m, "y", expected_version=0)
    assert mem.get(m).version == 1


def test_ids_that_collide_as_strings_never_see_each_other(mem: SharedMemory) -> None:
    ids = ["a", "ab", "a:b", "a_b", "a-b", "a/b", "*", "%", "a%3Ab", "ä", "日本", "a b", "A"]
    for i in ids:
        mem.write_scope(f"agent {i}", metadata={"agent_id": i, "group_id": i}, context_id=i)
    for i in ids:
        for scope in ({"agent_id": i}, {"group_id": i}, {"context_id": i},
                      {"agent_id": i, "group_id": i, "context_id": i}):
            assert [e.value for e in mem.read_scope(**scope)] == [f"agent {i}"]


def test_two_threads_racing_on_one_version_exactly_one_wins(mem: SharedMemory) -> None:
    for round_ in range(20):
        m = mem.write_scope("start", metadata={"agent_id": "a"})
        barrier = threading.Barrier(2)
        outcome: dict[str, object] = {}

        def racer(name: str, memory_id: str = m, barrier: threading.Barrier = barrier,
                  outcome: dict[str, object] = outcome) -> None:
            barrier.wait()
            try:
                outcome[name] = mem.update(memory_id, name, expected_version=1)
            except VersionConflictError as exc:
                outcome[name] = exc

        threads = [threading.Thread(target=racer, args=(n,)) for n in ("t1", "t2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [n for n, r in outcome.items() if r == 2]
        losers = [n for n, r in outcome.items() if isinstance(r, VersionConflictError)]
        assert len(winners) == 1 and len(losers) == 1, (round_, outcome)
        assert mem.get(m).value == winners[0]
        assert [v.value for v in mem.history(m)] == ["start", winners[0]]


def test_updates_without_expected_version_are_never_lost(mem: SharedMemory) -> None:
    m = mem.write_scope(0, metadata={"agent_id": "a"})

    def bump(n: int) -> None:
        for i in range(10):
            mem.update(m, f"{n}-{i}")

    threads = [threading.Thread(target=bump, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = mem.history(m)
    assert [v.version for v in history] == list(range(1, 42))
    assert sorted(v.value for v in history[1:]) == sorted(
        f"{n}-{i}" for n in range(4) for i in range(10))


def test_many_threads_writing_and_reading_one_instance(mem: SharedMemory) -> None:
    errors: list[BaseException] = []

    def agent(n: int) -> None:
        try:
            for i in range(25):
                mem.write_scope(i, metadata={"agent_id": f"a{n}", "group_id": "g"})
                mine = mem.read_scope(agent_id=f"a{n}")
                assert [e.value for e in mine] == list(range(i + 1))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(mem.read_scope(group_id="g")) == 200
    assert mem.log.verify() == 200


def test_replay_rebuilds_the_same_view(mem: SharedMemory) -> None:
    kept = mem.write_scope("k", metadata={"agent_id": "a"})
    gone = mem.write_scope("g", metadata={"agent_id": "b"})
    mem.update(kept, "k2")
    mem.delete(gone)
    before = mem.read_scope()
    assert mem.replay() == 4
    assert mem.read_scope() == before


def test_sqlite_memory_reopened_in_a_new_instance_sees_every_memory(tmp_path: Path) -> None:
    path = str(tmp_path / "swarm.db")
    first = SQLiteSharedMemory(db_path=path)
    m = first.write_scope("durable", metadata={"agent_id": "a", "group_id": "g"})
    first.update(m, "durable v2")
    second = SQLiteSharedMemory(db_path=path)
    assert second.read_scope(group_id="g") == first.read_scope(group_id="g")
    other = second.write_scope("from second", metadata={"agent_id": "b", "group_id": "g"})
    assert [e.memory_id for e in first.read_scope(group_id="g")] == [m, other]
    first.close()
    second.close()


def test_hybrid_memory_is_the_durable_log_with_the_cache_read_model(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    cache = InMemorySharedMemory()
    hybrid = HybridMemory(cache, SQLiteSharedMemory(db_path=path))
    assert hybrid.read_model is cache.read_model
    m = hybrid.write_scope("x", metadata={"agent_id": "a"})
    assert hybrid.get(m).value == "x"
    reopened = SQLiteSharedMemory(db_path=path)
    assert reopened.get(m).value == "x"
    reopened.close()
    hybrid.close()


def test_changing_a_returned_entry_does_not_change_the_memory(mem: SharedMemory) -> None:
    """Content is handed out read-only where a model shares it with every reader (the
    in-memory model), or as the reader's own copy (the SQL view): either way a change made to
    it never reaches the memory."""
    m = mem.write_scope({"plan": [1]}, metadata={"agent_id": "a", "tags": ["x"]})
    entry = mem.get(m)
    changes: list[Callable[[], object]] = [
        lambda: entry.value["plan"].append(2), lambda: entry.metadata["tags"].append("y"),
        lambda: mem.read_scope(agent_id="a")[0].metadata.update(new=1),
        lambda: mem.agent("a").read_scope()[0].value.pop("plan")]
    shared = isinstance(mem.read_model, InMemoryReadModel)
    for change in changes:
        if shared:
            with pytest.raises(TypeError, match="read-only"):
                change()
        else:
            change()
    again = mem.get(m)
    assert (again.value, again.metadata) == ({"plan": [1]}, {"tags": ["x"]})
    assert (again.value is entry.value) is shared  # shared, not copied, in memory


def test_hybrid_drops_what_the_cache_held_from_its_own_log(tmp_path: Path) -> None:
    persistent = SQLiteSharedMemory(db_path=str(tmp_path / "p.db"))
    kept = persistent.write_scope("durable", metadata={"agent_id": "a"})
    cache = InMemorySharedMemory()
    cache.write_scope("ephemeral", metadata={"agent_id": "a"})
    hybrid = HybridMemory(cache, persistent)
    assert [e.memory_id for e in hybrid.read_scope(agent_id="a")] == [kept]
    hybrid.close()


def test_retried_update_and_delete_with_event_id_return_the_first_answer(
        mem: SharedMemory) -> None:
    m = mem.write_scope("v1", metadata={"agent_id": "a"})
    assert mem.update(m, "v2", expected_version=1, event_id="upd-1") == 2
    assert mem.update(m, "v2", expected_version=1, event_id="upd-1") == 2  # lost response
    mem.update(m, "v3")
    assert mem.update(m, "v2", expected_version=1, event_id="upd-1") == 2  # even later
    with pytest.raises(IdempotencyError):
        mem.update(m, "other", event_id="upd-1")
    assert mem.delete(m, event_id="del-1") == 4
    assert mem.delete(m, event_id="del-1") == 4
    assert mem.log.head() == 4
