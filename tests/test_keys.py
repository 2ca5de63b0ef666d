"""Keys and namespaces: every read model answers as the fold does, and the facade's upsert,
batch and reads keep the contract (one live memory per key, retries record nothing, a batch
is all or nothing, a key tells an agent nothing but that it is taken)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from memswarm_es import (
    Delete,
    InMemorySharedMemory,
    Put,
    RedisSharedMemory,
    SharedMemory,
    SQLiteSharedMemory,
    Update,
    Write,
)
from memswarm_es.errors import (
    InvalidIdError,
    InvalidInputError,
    MemoryNotFoundError,
    PermissionDeniedError,
    VersionConflictError,
)
from memswarm_es.events import decode, encode
from memswarm_es.log import InProcessLog
from memswarm_es.namespaces import matches
from memswarm_es.scopes import Scope
from projections import open_read_model
from projections.base import ReadModel
from projections.fold import MemoryEntry, entry_from_row, entry_row
from tests.histories import assert_is_fold, assert_keys_are_fold, fill

from .test_chroma import HashingEmbedder

Opener = Callable[[], ReadModel]


@pytest.fixture(params=["memory", "sql", "sql-postgres", "chroma"])
def model(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadModel]:
    if request.param == "chroma":
        opened = open_read_model(f"chroma:///{tmp_path / 'chroma'}?collection=keys",
                                 embedding_function=HashingEmbedder())
    elif request.param == "sql-postgres":  # namespaces compared byte by byte there too
        opened = open_read_model(f"sql+{request.getfixturevalue('postgres_url')}",
                                 prefix=f"t{uuid.uuid4().hex[:12]}")
    else:
        opened = open_read_model("memory://" if request.param == "memory"
                                 else f"sql+sqlite:///{tmp_path / 'v.db'}")
    yield opened
    if request.param == "sql-postgres":
        opened.drop()
    opened.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_model_answers_keys_and_namespaces_as_the_fold(model: ReadModel,
                                                            seed: int) -> None:
    log = InProcessLog()
    fill(log, 300, seed=seed, batch=60)
    model.apply(log.read(0, 150))
    assert_keys_are_fold(model, log)  # half way, then all: removals and additions both
    model.apply(log.read(150))
    assert_keys_are_fold(model, log)
    assert_is_fold(model, log)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def swarm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedMemory]:
    memory: SharedMemory
    if request.param == "memory":
        memory = InMemorySharedMemory()
    elif request.param == "sqlite":
        memory = SQLiteSharedMemory(str(tmp_path / "swarm.db"))
    else:  # a SQLite log with its view in Redis
        memory = RedisSharedMemory(request.getfixturevalue("redis_url"),
                                   prefix=request.getfixturevalue("redis_prefix"),
                                   log=f"sqlite:///{tmp_path / 'log.db'}")
    yield memory
    if request.param == "redis":
        memory.read_model.drop()
    memory.close()


def test_a_put_upserts_and_a_retry_records_nothing(swarm: SharedMemory) -> None:
    first = swarm.put(("users", "alice"), "prefs", {"theme": "dark"})
    head = swarm.log.head()
    assert swarm.put(("users", "alice"), "prefs", {"theme": "dark"}) == first
    assert swarm.log.head() == head
    assert swarm.put(("users", "alice"), "prefs", {"theme": "light"}) == first
    entry = swarm.get_by_key(("users", "alice"), "prefs")
    assert entry is not None and entry.memory_id == first
    assert entry.value == {"theme": "light"} and entry.version == 2
    assert (entry.namespace, entry.key) == (("users", "alice"), "prefs")
    assert [v.version for v in swarm.history(first)] == [1, 2]
    # write_scope with a key held is the same upsert
    assert swarm.write_scope({"theme": "blue"}, key="prefs", namespace=("users", "alice")) \
        == first
    assert len(swarm.read_scope(namespace_prefix=("users",))) == 1


@pytest.mark.parametrize(("before", "after"), [
    (True, 1), (1, True), (0, False), (1, 1.0), ({"flag": True, "x": 1}, {"flag": 1, "x": 1.0}),
    ([1], [True]), ("1", 1)])
def test_a_put_of_a_value_equal_in_python_but_stored_differently_is_recorded(
        swarm: SharedMemory, before: object, after: object) -> None:
    """``True == 1 == 1.0`` in Python, not in the log: a put of one over the other is a change
    (the class of values msgpack keeps apart and ``==`` does not)."""
    swarm.put(("n",), "k", before)
    head = swarm.log.head()
    swarm.put(("n",), "k", after)
    assert swarm.log.head() == head + 1
    entry = swarm.get_by_key(("n",), "k")
    assert entry is not None and entry.value == after
    assert repr(entry.value) == repr(after)


def test_a_keyed_write_retried_after_the_memory_moved_on_returns_the_first_answer(
        swarm: SharedMemory) -> None:
    first = swarm.write_scope("a", key="k", namespace=("n",), event_id="req-1")
    swarm.put(("n",), "k", "changed by someone else")
    head = swarm.log.head()
    assert swarm.write_scope("a", key="k", namespace=("n",), event_id="req-1") == first
    swarm.delete(first)
    assert swarm.write_scope("a", key="k", namespace=("n",), event_id="req-1") == first
    assert swarm.log.head() == head + 1  # the delete, nothing else
    assert swarm.get_by_key(("n",), "k") is None


def test_a_write_without_a_key_reads_nothing_from_the_log(swarm: SharedMemory,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[object] = []
    real = swarm.log.query
    monkeypatch.setattr(swarm.log, "query", lambda *a, **k: reads.append(a) or real(*a, **k))
    swarm.write_scope("hello", metadata={"agent_id": "a"})
    swarm.agent("a").write_scope("hello again")
    assert reads == []


def test_a_key_made_again_after_a_delete_is_a_new_memory(swarm: SharedMemory) -> None:
    first = swarm.put(("n",), "k", 1)
    swarm.delete(first)
    assert swarm.get_by_key(("n",), "k") is None
    second = swarm.put(("n",), "k", 2)
    assert second != first
    swarm.apply([Delete(namespace=("n",), key="k")])
    third = swarm.put(("n",), "k", 3)
    assert len({first, second, third}) == 3
    entry = swarm.get_by_key(("n",), "k")
    assert entry is not None and (entry.memory_id, entry.value) == (third, 3)


def test_racing_creators_of_one_key_make_one_memory(tmp_path: Path) -> None:
    path = str(tmp_path / "race.db")
    SQLiteSharedMemory(path).close()
    ids: list[str] = []
    errors: list[BaseException] = []

    def put(n: int) -> None:
        try:
            with SQLiteSharedMemory(path, synchronous="NORMAL") as mine:
                for round_ in range(5):
                    ids.append(mine.put(("race",), f"k{round_}", {"by": n}))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with SQLiteSharedMemory(path) as swarm:
        live = swarm.read_scope(namespace_prefix=("race",))
        assert sorted(e.key or "" for e in live) == [f"k{r}" for r in range(5)]
        assert set(ids) == {e.memory_id for e in live}


def test_a_batch_is_one_append_all_or_nothing(swarm: SharedMemory) -> None:
    kept = swarm.write_scope("kept")
    head = swarm.log.head()
    written, put, put_again, version = swarm.apply([
        Write("w", namespace=("b",)), Put(("b",), "k", 1), Put(("b",), "k", 2),
        Update(kept, "changed")])
    assert put == put_again and version == 2
    assert swarm.log.head() == head + 4
    assert len({e.recorded_at_us for e in swarm.log.read(head)}) == 1  # one append
    entry = swarm.get_by_key(("b",), "k")
    assert entry is not None and (entry.value, entry.version) == (2, 2)
    assert swarm.get(str(written)).namespace == ("b",)
    head = swarm.log.head()
    for bad in ([Put(("b",), "k", 3), Update("missing", 1)],
                [Put(("b",), "k", 3), Update(kept, "x", expected_version=1)],
                [Put(("b",), "k", 3), Put(("b.c",), "k", 1)],
                [Put(("b",), "k", 3), Write(object())]):
        with pytest.raises((MemoryNotFoundError, VersionConflictError, InvalidInputError)):
            swarm.apply(bad)
    assert swarm.log.head() == head
    assert swarm.apply([Delete(namespace=("b",), key="absent")]) == [0]
    assert swarm.log.head() == head


@pytest.mark.parametrize("bad", [("a.b",), ("",), "a", ("a", 1), ("a\n",), ("a", ["b"]),
                                 (["a"],), ["a", ["b"]], ("a", ("b",))])
def test_a_bad_namespace_is_refused_and_writes_nothing(swarm: SharedMemory,
                                                       bad: object) -> None:
    swarm.get_by_key(("a",), "k")  # a good one, remembered: the bad ones are still refused
    for _ in range(2):
        with pytest.raises(InvalidIdError):
            swarm.get_by_key(bad, "k")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        swarm.put(bad, "k", 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        swarm.write_scope(1, namespace=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        swarm.put(("a",), "", 1)
    assert swarm.log.head() == 0


@pytest.mark.parametrize("options", [
    {"filter": {"n": {"$like": 1}}}, {"filter": {"n": {"$gt": "x"}}}, {"filter": ["n"]},
    {"order_by": "position"}, {"limit": -1}, {"offset": True}, {"namespace_prefix": ("a.b",)},
])
def test_a_bad_query_is_refused(swarm: SharedMemory, options: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        swarm.read_scope(**options)  # type: ignore[arg-type]


def test_reads_filter_order_and_page(swarm: SharedMemory) -> None:
    for n in range(6):
        swarm.put(("docs", "x" if n % 2 else "y"), f"k{n}", {"n": n, "kind": "doc"})
    swarm.put(("docs", "y"), "k0", {"n": 10, "kind": "doc"})  # now the last changed
    swarm.write_scope({"n": 3}, namespace=("other",))
    values = [e.value["n"] for e in swarm.read_scope(namespace_prefix=("docs",))]
    assert values == [10, 1, 2, 3, 4, 5]
    assert [e.value["n"] for e in swarm.read_scope(
        namespace_prefix=("docs",), filter={"n": {"$gte": 2, "$lt": 5}})] == [2, 3, 4]
    assert [e.value["n"] for e in swarm.read_scope(filter={"n": 3})] == [3, 3]
    assert [e.value["n"] for e in swarm.read_scope(
        namespace_prefix=("docs",), order_by="updated_at", limit=2, offset=1)] == [5, 4]
    assert swarm.namespaces() == [("docs", "x"), ("docs", "y"), ("other",)]
    assert swarm.namespaces(prefix=("docs", "*"), max_depth=1) == [("docs",)]
    assert swarm.namespaces(suffix=("y",)) == [("docs", "y")]
    assert swarm.namespaces(limit=1, offset=1) == [("docs", "y")]


def test_an_agent_sees_keys_and_namespaces_only_of_what_it_may_read(
        swarm: SharedMemory) -> None:
    alice, bob = swarm.agent("alice"), swarm.agent("bob")
    secret = alice.put(("private",), "plan", {"text": "secret plan"})
    shared = alice.put(("public",), "note", "hi", readable_by=["*"])
    assert bob.get_by_key(("private",), "plan") is None
    held = bob.get_by_key(("public",), "note")
    assert held is not None and held.memory_id == shared
    assert bob.namespaces() == [("public",)]
    assert alice.namespaces() == [("private",), ("public",)]
    assert [e.memory_id for e in bob.read_scope(namespace_prefix=("private",))] == []
    head = swarm.log.head()
    for attempt in (lambda: bob.put(("private",), "plan", "mine now"),
                    lambda: bob.put(("public",), "note", "mine now"),
                    lambda: bob.apply([Delete(namespace=("private",), key="plan")])):
        with pytest.raises(PermissionDeniedError) as caught:
            attempt()
        message = str(caught.value)
        assert "plan" in message or "note" in message
        assert secret not in message and shared not in message and "secret" not in message
    assert swarm.log.head() == head
    # a writer of the memory may put: the memory keeps its scope and its owner
    alice.set_permissions(secret, writable_by=["agent:alice", "agent:bob"],
                          readable_by=["agent:alice", "agent:bob"])
    assert bob.put(("private",), "plan", "bob's plan") == secret
    entry = alice.get_by_key(("private",), "plan")
    assert entry is not None and (entry.agent_id, entry.updated_by) == ("alice", "bob")


def test_namespace_matching_follows_langgraph() -> None:
    assert matches(("a", "b", "c"), ("a", "*"), ("c",))
    assert not matches(("a",), ("a", "*"), None)
    assert matches(("a", "b"), None, ("*", "b"))
    assert not matches(("a", "b"), ("b",), None)


def test_entries_stored_before_keys_still_load() -> None:
    entry = MemoryEntry("m", 1, {}, "a", None, None, 1, 1, 1, 0, 0, "a", "a", None,
                        ("agent:a",), ("agent:a",), "k", ("x", "y"), (0.5, -1.0))
    row = entry_row(entry)
    assert entry_from_row(decode(encode(row))) == entry
    before_vectors = entry_from_row(row[:-1])
    assert (before_vectors.namespace, before_vectors.embedding) == (("x", "y"), None)
    old = entry_from_row(row[:-3])
    assert (old.key, old.namespace, old.readable_by) == (None, (), ("agent:a",))


def test_a_sql_view_made_before_keys_is_folded_again(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with SQLiteSharedMemory(str(path)) as swarm:
        swarm.put(("n",), "k", 1)
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # as a view made before keys had columns
        conn.exec_driver_sql("DROP INDEX memswarm_view_memories_key")
        conn.exec_driver_sql("ALTER TABLE memswarm_view_memories DROP COLUMN key")
        conn.exec_driver_sql("ALTER TABLE memswarm_view_memories DROP COLUMN namespace")
    engine.dispose()
    with SQLiteSharedMemory(str(path)) as swarm:
        entry = swarm.get_by_key(("n",), "k")
        assert entry is not None and entry.value == 1
        assert swarm.namespaces() == [("n",)]


@pytest.mark.parametrize("seed", [0, 1])
def test_redis_answers_keys_and_namespaces_as_the_fold(redis_url: str, redis_prefix: str,
                                                       seed: int) -> None:
    model = open_read_model(redis_url, prefix=redis_prefix)
    try:
        log = InProcessLog()
        fill(log, 300, seed=seed, batch=60)
        model.apply(log.read(0, 150))
        assert_keys_are_fold(model, log)
        model.apply(log.read(150))
        assert_keys_are_fold(model, log)
        assert_is_fold(model, log)
    finally:
        model.drop()
        model.close()


def test_the_async_facade_puts_and_reads_by_key() -> None:
    import asyncio

    from memswarm_es import AsyncSharedMemory

    async def scenario() -> None:
        swarm = AsyncSharedMemory(InMemorySharedMemory())
        agent = swarm.agent("a")
        mid = await agent.put(("n", "x"), "k", {"v": 1})
        assert await agent.put(("n", "x"), "k", {"v": 2}) == mid
        assert await swarm.apply([Put(("n", "y"), "k", {"v": 3})]) != [mid]
        entry = await agent.get_by_key(("n", "x"), "k")
        assert entry is not None and entry.value == {"v": 2}
        assert await agent.namespaces() == [("n", "x")]
        assert await swarm.namespaces(max_depth=1) == [("n",)]
        found = await swarm.read_scope(namespace_prefix=("n",), filter={"v": {"$gt": 2}})
        assert [e.value for e in found] == [{"v": 3}]
        assert [e.value for e in await agent.read_scope(limit=5)] == [{"v": 2}]
        await swarm.close()

    asyncio.run(scenario())


def test_every_model_takes_an_id_asked_for_twice(model: ReadModel) -> None:
    log = InProcessLog()
    fill(log, 40, seed=3)
    model.apply(log.read())
    some = [e.memory_id for e in model.read_scope(Scope())][:3]
    assert list(model.get_many(some + some)) == list(model.get_many(some))
