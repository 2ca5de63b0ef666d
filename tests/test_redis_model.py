"""The Redis read model against a real redis-server: layout, atomic commits, generations,
prefixes, what a scoped read touches, typed errors, the lease, and the seed names."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import HealthCheck, given, settings

from memswarm_es import HybridMemory, RedisSharedMemory, SQLiteSharedMemory
from memswarm_es.errors import (
    CheckpointConflictError,
    ForeignStoreError,
    ReadModelUnavailableError,
)
from memswarm_es.events import EventType, NewEvent
from memswarm_es.log import InProcessLog
from memswarm_es.scopes import Scope
from projections.fold import MembershipChange, fold, select
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector
from projections.redis import RedisReadModel
from tests.histories import AGENTS, assert_is_fold, fill, query_scopes
from tests.servers_redis import watched
from tests.test_runner import ROOT, eventually


@pytest.fixture
def model(redis_url: str, redis_prefix: str) -> Iterator[RedisReadModel]:
    found = RedisReadModel(redis_url, prefix=redis_prefix)
    yield found
    found.close()


def keys_of(client: redis.Redis, prefix: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=1000)}


def test_projection_equals_in_memory_model_and_fold(model: RedisReadModel) -> None:
    log = InProcessLog()
    fill(log, 3000, seed=1)
    Projector(log, model, batch_size=250).catch_up()
    reference = InMemoryReadModel()
    Projector(log, reference).catch_up()
    assert model.checkpoint() == 3000
    assert_is_fold(model, log)
    for scope in query_scopes():
        assert model.read_scope(scope) == reference.read_scope(scope)
    some = [e.memory_id for e in reference.read_scope(Scope(agent_id="a"))][:50]
    assert model.get_many([*some, "no-such-id"]) == reference.get_many(some)


def test_commit_refuses_a_stale_checkpoint_and_changes_nothing(model: RedisReadModel) -> None:
    log = InProcessLog()
    fill(log, 200)
    events = log.read()
    model.apply(events[:100])
    before = model.read_scope(Scope())
    with pytest.raises(CheckpointConflictError) as caught:
        model.commit([], expected_checkpoint=50, checkpoint=150)
    assert caught.value.actual == 100
    with pytest.raises(CheckpointConflictError):
        model.apply(events[150:])  # would leave a gap
    assert model.checkpoint() == 100
    assert model.read_scope(Scope()) == before
    assert model.apply(events[50:]) == 200  # the overlap is skipped, not applied twice
    assert_is_fold(model, log)


def test_clear_is_a_new_generation_and_the_old_keys_go(model: RedisReadModel,
                                                       redis_prefix: str) -> None:
    log = InProcessLog()
    fill(log, 500)
    Projector(log, model).catch_up()
    old = keys_of(model.client, redis_prefix)
    assert any(":g0:i:" in k for k in old)
    model.clear()
    assert model.checkpoint() == 0
    assert model.read_scope(Scope()) == []
    left = keys_of(model.client, redis_prefix)
    assert not any(":g0:" in k for k in left), left
    Projector(log, model).catch_up()
    assert_is_fold(model, log)
    model.drop()
    assert keys_of(model.client, redis_prefix) == set()


def test_prefixes_never_share_keys(redis_url: str, redis_prefix: str) -> None:
    log_a, log_b = InProcessLog(), InProcessLog()
    fill(log_a, 300, seed=2)
    fill(log_b, 200, seed=3)
    a = RedisReadModel(redis_url, prefix=redis_prefix)
    b = RedisReadModel(redis_url, prefix=f"{redis_prefix}:g0")  # looks like a's generation
    Projector(log_a, a).catch_up()
    Projector(log_b, b).catch_up()
    assert_is_fold(a, log_a)
    assert_is_fold(b, log_b)
    b.drop()
    assert_is_fold(a, log_a)
    a.close()
    b.close()


def test_a_scoped_read_touches_only_its_own_keys(model: RedisReadModel,
                                                 redis_prefix: str) -> None:
    log = InProcessLog()
    fill(log, 2000, seed=4)
    Projector(log, model).catch_up()
    got, commands = watched(model, redis_prefix, lambda: model.read_scope(Scope("a:b", "g1")))
    assert got and all(e.agent_id == "a:b" and e.group_id == "g1" for e in got)
    base = redis_prefix
    allowed = {f"{base}:meta", f"{base}:g0:i:agent:a%3Ab", f"{base}:g0:i:group:g1",
               f"{base}:g0:mem", f"{base}:g"}
    touched = {word for c in commands for word in c.split() if word.startswith(base)}
    assert touched <= allowed, touched - allowed
    names = [c.split()[0].upper() for c in commands]
    assert not {"SCAN", "KEYS", "HGETALL", "ZRANGE"} & set(names), names
    (fetch,) = [c for c in commands if c.upper().startswith("HMGET")]
    assert len(fetch.split()) - 2 == len(got)  # only the entries returned are read


def test_typed_errors(redis_url: str, redis_prefix: str, model: RedisReadModel) -> None:
    model.client.hset(model.meta_key, "format", "something-else")
    with pytest.raises(ForeignStoreError):
        model.checkpoint()
    model.client.delete(model.meta_key)
    model.client.set(model.meta_key, "a string")
    with pytest.raises(ForeignStoreError):
        model.checkpoint()
    model.client.delete(model.meta_key)
    closed = RedisReadModel("redis://127.0.0.1:1/0", prefix="x", socket_timeout=1)
    with pytest.raises(ReadModelUnavailableError):
        closed.checkpoint()
    with pytest.raises(ValueError):
        RedisReadModel(redis_url, prefix="")


def test_async_twins_read_the_same(model: RedisReadModel) -> None:
    log = InProcessLog()
    fill(log, 400, seed=5)
    Projector(log, model).catch_up()

    async def main() -> None:
        for scope in query_scopes():
            assert await model.read_scope_async(scope) == model.read_scope(scope)
        assert await model.checkpoint_async() == 400
        ids = [e.memory_id for e in model.read_scope(Scope())][:10]
        assert await model.get_many_async(ids) == model.get_many(ids)
        await model.aclose()

    asyncio.run(main())


def test_the_lease_is_held_by_one_owner_and_expires(model: RedisReadModel) -> None:
    lease = model.lease(ttl=0.3)
    assert lease.acquire("one")
    assert not lease.acquire("two")
    assert lease.acquire("one")  # renewed
    assert lease.holder() == "one"
    lease.release("two")  # not the holder: nothing happens
    assert lease.holder() == "one"
    time.sleep(0.5)
    assert lease.acquire("two")
    lease.release("two")
    assert lease.holder() is None


def test_redis_memory_on_its_own_is_ephemeral(redis_url: str) -> None:
    mem = RedisSharedMemory(redis_url)
    m = mem.write_scope("x", metadata={"agent_id": "a"})
    assert [e.memory_id for e in mem.read_scope(agent_id="a")] == [m]
    prefix = mem.read_model.prefix
    assert prefix.startswith("memswarm.local.")
    client = redis.Redis.from_url(redis_url)
    assert keys_of(client, prefix)
    mem.close()
    assert keys_of(client, prefix) == set()
    client.close()


def test_hybrid_redis_and_sqlite_share_one_view(redis_url: str, redis_prefix: str,
                                                tmp_path: Path) -> None:
    db = str(tmp_path / "swarm.db")

    def open_hybrid() -> HybridMemory:
        return HybridMemory(RedisSharedMemory(redis_url, prefix=redis_prefix),
                            SQLiteSharedMemory(db))

    one, two = open_hybrid(), open_hybrid()
    m = one.write_scope("bridge closed", metadata={"agent_id": "scout", "group_id": "r"})
    two.update(m, "bridge closed; detour", expected_version=1)
    assert [e.value for e in one.read_scope(group_id="r")] == ["bridge closed; detour"]
    assert isinstance(one.read_model, RedisReadModel)
    assert one.read_model.prefix == redis_prefix
    one.close()
    two.close()
    direct = RedisSharedMemory(redis_url, prefix=redis_prefix, log=f"sqlite:///{db}")
    assert direct.get(m).version == 2
    view = fold(direct.log.read())
    assert direct.read_scope() == select(view.entries.values(), Scope())
    direct.close()


_EPHEMERAL_THEN_KILLED = """
import os, signal, sys
from projections import redis as view
view.EPHEMERAL_TTL = 1.0
from memswarm_es import RedisSharedMemory
mem = RedisSharedMemory(sys.argv[1], prefix=sys.argv[2])
for n in range(50):
    mem.write_scope(n, metadata={"agent_id": f"a{n % 5}", "group_id": "g"})
mem.write_scope("after clear", metadata={"agent_id": "b"})
print(mem.read_model.prefix, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_process_leaves_no_ephemeral_keys(redis_url: str,
                                                   redis_prefix: str) -> None:
    child = subprocess.run([sys.executable, "-c", _EPHEMERAL_THEN_KILLED, redis_url,
                            redis_prefix], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    prefix = child.stdout.strip()
    assert prefix.startswith(f"{redis_prefix}.local.")
    client = redis.Redis.from_url(redis_url)
    assert keys_of(client, prefix)  # left behind by the kill...
    eventually(lambda: not keys_of(client, prefix), timeout=10, what="the keys to expire")
    client.close()


def test_a_live_ephemeral_memory_keeps_its_keys(redis_url: str, redis_prefix: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("projections.redis.EPHEMERAL_TTL", 0.6)
    mem = RedisSharedMemory(redis_url, prefix=redis_prefix)
    ids = [mem.write_scope(n, metadata={"agent_id": "a", "group_id": f"g{n % 2}"})
           for n in range(20)]
    client = redis.Redis.from_url(redis_url)
    prefix = mem.read_model.prefix
    before = keys_of(client, prefix)
    assert all(0 < client.pttl(k) <= 600 for k in before)
    time.sleep(2)  # several lifetimes: renewed all along
    assert keys_of(client, prefix) == before
    assert [e.memory_id for e in mem.read_scope(agent_id="a")] == ids
    assert len(mem.read_scope(group_id="g1")) == 10
    mem.close()
    assert keys_of(client, prefix) == set()
    client.close()


def test_a_view_of_the_earlier_format_is_rebuilt_not_misread(redis_url: str, redis_prefix: str,
                                                             model: RedisReadModel) -> None:
    """Format 1 kept a memory's own agent and group in reader indexes, where this version reads
    the ``own:`` indexes: opened, such a view starts again from nothing and is rebuilt."""
    log = InProcessLog()
    fill(log, 300, seed=11)
    log.append([NewEvent.create(EventType.GROUP_JOINED, Scope("a", "g1"), "operator",
                                {"admin": False})])
    Projector(log, model).catch_up()
    model.client.hset(model.meta_key, "format", "memswarm-redis-1")
    model.client.delete(f"{redis_prefix}:g0:i:own:agent", f"{redis_prefix}:g0:i:own:group")
    opened = RedisReadModel(redis_url, prefix=redis_prefix)
    try:
        assert opened.checkpoint() == 0
        assert not {k for k in keys_of(opened.client, redis_prefix) if ":g0:" in k}
        Projector(log, opened).catch_up()
        assert_is_fold(opened, log)
        reference = InMemoryReadModel()
        Projector(log, reference).catch_up()
        for reader in [*AGENTS, None]:
            for scope in query_scopes():
                assert opened.read_scope(scope, reader) == reference.read_scope(scope, reader)
        # a projector of this version still running once a later version took the view over
        # writes nothing into it: its commit checks the format too
        (left,) = log.append([NewEvent.create(EventType.GROUP_LEFT, Scope("a", "g1"),
                                              "operator", {})])
        reached = opened.checkpoint()
        opened.client.hset(opened.meta_key, "format", "something-else")
        with pytest.raises(ForeignStoreError):
            opened.commit([], reached, left.position, [left],
                          [MembershipChange("a", "g1", None)])
        assert opened.client.hmget(opened.meta_key, ["checkpoint", "format"]) == [
            str(reached).encode(), b"something-else"]
        with pytest.raises(ForeignStoreError):
            RedisReadModel(redis_url, prefix=redis_prefix).checkpoint()
    finally:
        opened.close()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), batch_size=st.integers(1, 9))
def test_a_catch_up_folding_each_batch_while_the_last_commits_equals_the_fold(
        redis_url: str, redis_prefix: str, seed: int, batch_size: int) -> None:
    """The projector folds batch n + 1 while Redis runs batch n's script, against the entries
    as batch n leaves them (updates and deletes of one memory in batches side by side)."""
    log = InProcessLog()
    fill(log, 200, seed=seed)
    model = RedisReadModel(redis_url, prefix=f"{redis_prefix}-{seed}-{batch_size}")
    try:
        if seed % 2:
            model.client.script_flush()  # a commit script Redis does not hold: loaded again
        assert Projector(log, model, batch_size).catch_up() == log.head()
        assert_is_fold(model, log)
    finally:
        model.drop()
        model.close()
