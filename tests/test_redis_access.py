"""Access in the Redis read model against a real redis-server: what an agent reads follows the
permissions of each memory's latest version and the memberships as they stand now; the reader
indexes and membership hashes live in the generation (collected with it, expiring with a
private view); an agent's read stays one script that touches only its own keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from memswarm_es.errors import ReadModelBehindError
from memswarm_es.events import EventType, NewEvent, new_id
from memswarm_es.log import InProcessLog
from memswarm_es.scopes import Scope
from projections.fold import Change, fold, reader_principals, select
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector
from projections.redis import RedisReadModel
from tests.histories import AGENTS, MEMBER_GROUPS, assert_is_fold, fill, query_scopes
from tests.servers_redis import watched
from tests.test_runner import eventually


@pytest.fixture
def model(redis_url: str, redis_prefix: str) -> Iterator[RedisReadModel]:
    found = RedisReadModel(redis_url, prefix=redis_prefix)
    yield found
    found.close()


EVERYWHERE = Scope()


def keys_of(client: redis.Redis, prefix: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=1000)}


class Swarm:
    """A log and a Redis view of it, with the events of issue 12 appended by name."""

    def __init__(self, model: RedisReadModel) -> None:
        self.log = InProcessLog()
        self.model = model
        self.versions: dict[str, tuple[Scope, int]] = {}

    def _append(self, event: NewEvent) -> None:
        self.log.append([event])
        Projector(self.log, self.model).catch_up()

    def write(self, agent: str, group: str | None = None,
              readable_by: list[str] | None = None) -> str:
        memory_id, scope = new_id(), Scope(agent, group)
        data: dict[str, Any] = {"value": memory_id, "metadata": {}}
        if readable_by is not None:
            data["readable_by"] = readable_by
        self.versions[memory_id] = (scope, 1)
        self._append(NewEvent.create(EventType.MEMORY_WRITTEN, scope, agent, data,
                                     memory_id=memory_id, version=1))
        return memory_id

    def set_readers(self, memory_id: str, readable_by: list[str]) -> None:
        scope, version = self.versions[memory_id]
        self.versions[memory_id] = (scope, version + 1)
        self._append(NewEvent.create(EventType.MEMORY_UPDATED, scope, "operator",
                                     {"readable_by": readable_by}, memory_id=memory_id,
                                     version=version + 1))

    def delete(self, memory_id: str) -> None:
        scope, version = self.versions.pop(memory_id)
        self._append(NewEvent.create(EventType.MEMORY_DELETED, scope, "operator", {},
                                     memory_id=memory_id, version=version + 1))

    def join(self, agent: str, group: str, admin: bool = False) -> None:
        self._append(NewEvent.create(EventType.GROUP_JOINED, Scope(agent, group), "operator",
                                     {"admin": admin}))

    def leave(self, agent: str, group: str) -> None:
        self._append(NewEvent.create(EventType.GROUP_LEFT, Scope(agent, group), "operator", {}))

    def readable(self, reader: str | None, scope: Scope = EVERYWHERE) -> list[str]:
        """The ids ``reader`` reads in ``scope``, after checking every path agrees on them."""
        found = [e.memory_id for e in self.model.read_scope(scope, reader)]
        everything = [*self.versions, "nothing"]
        got = self.model.get_many(everything, reader)
        assert [m for m in found if m in got] == found
        if scope.is_empty():
            assert sorted(got) == sorted(found)
        assert_is_fold(self.model, self.log)
        return found


def test_a_permission_change_moves_a_memory_out_of_an_agents_reads(
        model: RedisReadModel) -> None:
    swarm = Swarm(model)
    m = swarm.write("a", "g1", readable_by=["agent:b"])
    kept = swarm.write("a", "g1", readable_by=["agent:b", "*"])
    assert swarm.readable("b") == [m, kept]
    assert swarm.readable("b", Scope(group_id="g1")) == [m, kept]
    assert swarm.readable("c") == [kept]
    assert swarm.readable("a") == [kept]  # its own memory, but not among the readers named
    swarm.set_readers(m, ["agent:c"])
    assert swarm.readable("b") == [kept]
    assert swarm.readable("b", Scope("a", "g1")) == [kept]
    assert model.get(m, "b") is None
    assert swarm.readable("c") == [m, kept]
    assert [e.memory_id for e in model.read_scope(Scope())] == [m, kept]  # the operator
    # moved between the reader indexes, not filtered after reading
    base = f"{model.prefix}:g0:i:"
    assert model.client.zscore(base + "r:agent%3Ab", m) is None
    assert model.client.zscore(base + "r:agent%3Ac", m) is not None
    swarm.set_readers(m, [])
    assert swarm.readable("c") == [kept]
    swarm.delete(kept)
    assert swarm.readable("b") == swarm.readable("c") == []
    assert not model.client.exists(base + "r:*")


def test_leaving_a_group_removes_access_at_once(model: RedisReadModel) -> None:
    swarm = Swarm(model)
    shared = swarm.write("a", "g1")  # by default: its agent and the members of g1
    mine = swarm.write("b", "g1")
    assert swarm.readable("b") == [mine]
    swarm.join("b", "g1", admin=True)
    assert model.members("g1") == {"b": True}
    assert model.groups_of("b") == {"g1": True}
    assert swarm.readable("b") == [shared, mine]
    assert swarm.readable("b", Scope(group_id="g1")) == [shared, mine]
    swarm.join("c", "g1")
    assert model.members("g1") == {"b": True, "c": False}
    swarm.leave("b", "g1")
    assert model.members("g1") == {"c": False}
    assert model.groups_of("b") == {}
    assert swarm.readable("b") == [mine]  # what it wrote itself it still reads
    assert swarm.readable("b", Scope("a")) == []
    assert model.get(shared, "b") is None
    assert swarm.readable("c") == [shared, mine]

    async def main() -> None:
        assert [e.memory_id for e in await model.read_scope_async(Scope(), "b")] == [mine]
        assert await model.get_many_async([shared, mine], "b") == {mine: model.get(mine)}
        assert await model.members_async("g1") == {"c": False}
        await model.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(("agent", "group"), [("x", "x"), ("a:b", "a:b"), ("a%3Ab", "a:b"),
                                              ("a:b", "a%3Ab"), ("%", "%25")])
def test_a_group_named_like_an_agent_grants_that_agent_nothing(model: RedisReadModel,
                                                               agent: str, group: str) -> None:
    swarm = Swarm(model)
    to_group = swarm.write("w", readable_by=[f"group:{group}"])
    to_agent = swarm.write("w", readable_by=[f"agent:{agent}"])
    to_other = swarm.write("w", readable_by=[f"agent:{group}"] if group != agent else [])
    assert swarm.readable(agent) == [to_agent]  # not a member of the group named like it
    swarm.join("y", group)
    assert swarm.readable("y") == [to_group]  # a member, but not the agent named like it
    swarm.join(agent, group)
    assert swarm.readable(agent) == [to_group, to_agent]
    swarm.leave(agent, group)
    assert swarm.readable(agent) == [to_agent]
    if group != agent:
        assert swarm.readable(group) == [to_other]


def test_every_agent_reads_the_fold_of_a_long_history(model: RedisReadModel) -> None:
    log = InProcessLog()
    fill(log, 4000, seed=11)
    Projector(log, model, batch_size=333).catch_up()
    assert_is_fold(model, log)
    view = fold(log.read())
    assert any(view.members.values())
    for reader in AGENTS:
        every = select(view.entries.values(), Scope(), reader_principals(view.members, reader))
        assert 0 < len(every) < len(view.entries)  # each agent reads some, never all


def test_a_second_write_of_one_id_moves_it_in_every_index(model: RedisReadModel) -> None:
    """A foreign log may write one id twice: the second write's scope, position and readers
    replace the first's everywhere, as in the in-memory model."""
    swarm = Swarm(model)
    moved = swarm.write("a", "g1")
    between = swarm.write("c", readable_by=["*"])
    reference = InMemoryReadModel()
    Projector(swarm.log, reference).catch_up()
    first = model.get(moved)
    assert first is not None
    again = first._replace(agent_id="b", group_id="g2", position=9, last_position=9,
                         readable_by=("agent:b", "group:g1"))
    for target in (model, reference):
        target.commit([Change(moved, first, again)], 2, 9)
    for reader in (None, "a", "b", "c"):
        for scope in (Scope(), Scope("a"), Scope("b"), Scope(group_id="g1"),
                      Scope(group_id="g2")):
            assert model.read_scope(scope, reader) == reference.read_scope(scope, reader)
    assert [e.memory_id for e in model.read_scope(Scope(), "b")] == [between, moved]
    assert model.read_scope(Scope("a")) == []


def _generation_keys(model: RedisReadModel, gen: int) -> set[str]:
    return {k for k in keys_of(model.client, model.prefix) if f":g{gen}:" in k}


def _access_keys(keys: set[str]) -> set[str]:
    return {k for k in keys if any(f":i:{kind}:" in k for kind in ("r", "groups", "members"))}


def test_reader_and_member_keys_go_with_old_generations(model: RedisReadModel) -> None:
    log = InProcessLog()
    fill(log, 1500, seed=12)
    Projector(log, model).catch_up()
    old = _access_keys(_generation_keys(model, 0))
    assert {k.split(":i:")[1].split(":")[0] for k in old} == {"r", "groups", "members"}
    registered = {n.decode() for n in model.client.smembers(f"{model.prefix}:g0:idx")}
    assert {k.split(":i:", 1)[1] for k in old} <= registered  # so the collector finds them
    staged = model.staging()
    assert staged is not None
    Projector(log, staged).catch_up()
    assert model.switch_to(staged)
    staged.close()
    assert _generation_keys(model, 0) == set()
    gen = int(model.client.hget(model.meta_key, "gen") or 0)
    assert {k.replace(f":g{gen}:", ":g0:") for k in _access_keys(_generation_keys(model, gen))
            } == old
    assert_is_fold(model, log)
    model.clear()
    assert not _access_keys(keys_of(model.client, model.prefix))
    assert model.members("g1") == model.groups_of("a") == {}
    assert model.read_scope(Scope(), "a") == []


def test_reader_and_member_keys_expire_with_a_private_view(redis_url: str,
                                                           redis_prefix: str) -> None:
    model = RedisReadModel(redis_url, prefix=redis_prefix, expire_after=0.6)
    swarm = Swarm(model)
    swarm.join("a", "g1")
    first = swarm.write("b", "g1", readable_by=["agent:c"])
    second = swarm.write("b", "g1")
    swarm.leave("a", "g1")  # its hashes go...
    swarm.join("a", "g1")  # ...and come again: made in a later commit, they expire too
    swarm.set_readers(first, ["agent:d", "*"])  # reader indexes made by an update
    keys = keys_of(model.client, redis_prefix)
    assert {f"{redis_prefix}:g0:i:{name}" for name in (
        "own:group", "own:agent", "r:agent%3Ad", "r:*", "groups:a", "members:g1")} <= keys
    assert all(0 < model.client.pttl(k) <= 600 for k in keys), {
        k: model.client.pttl(k) for k in keys}
    time.sleep(2)  # several lifetimes: renewed all along
    assert keys_of(model.client, redis_prefix) == keys
    assert swarm.readable("a") == [first, second]
    model.close()
    client = redis.Redis.from_url(redis_url)
    eventually(lambda: not keys_of(client, redis_prefix), timeout=10, what="the keys to expire")
    client.close()


def test_members_wait_for_a_view_built_from_nothing(redis_url: str,
                                                    redis_prefix: str) -> None:
    model = RedisReadModel(redis_url, prefix=redis_prefix, rebuild_timeout=0.3)
    model.mark_rebuilding(10)
    for read in (lambda: model.members("g1"), lambda: model.groups_of("a"),
                 lambda: model.read_scope(Scope(), "a"), lambda: model.get_many(["m"], "a")):
        with pytest.raises(ReadModelBehindError):
            read()

    async def main() -> None:
        try:
            with pytest.raises(ReadModelBehindError):
                await model.members_async("g1")
        finally:
            await model.aclose()

    asyncio.run(main())
    model.close()




def test_an_agents_read_is_one_script_over_its_own_keys(model: RedisReadModel,
                                                        redis_prefix: str) -> None:
    log = InProcessLog()
    fill(log, 2000, seed=4)
    log.append([NewEvent.create(EventType.GROUP_JOINED, Scope("a:b", "g1"), "operator",
                                {"admin": False})])
    Projector(log, model).catch_up()
    view = fold(log.read())
    principals = reader_principals(view.members, "a:b")
    assert principals is not None and "group:g1" in principals
    model.read_scope(Scope(), "a:b")  # the script is loaded before it is watched
    got, commands = watched(model, redis_prefix,
                             lambda: model.read_scope(Scope(group_id="g1"), "a:b"))
    assert got == select(view.entries.values(), Scope(group_id="g1"), principals)
    base = f"{redis_prefix}:g0:i:"
    readers = {base + "r:" + p.replace("%", "%25").replace(":", "%3A") for p in principals}
    # memories readable by their own agent or group: those indexes with the principal's own
    owners = {base + p.replace("%", "%25").replace(":", "%3A").replace("%3A", ":", 1)
              for p in principals if p != "*"}
    allowed = {f"{redis_prefix}:meta", f"{redis_prefix}:g", f"{redis_prefix}:g0:mem",
               base + "group:g1", base + "groups:a%3Ab", base + "own:agent",
               base + "own:group", *readers, *owners}
    touched = {word for c in commands for word in c.split() if word.startswith(redis_prefix)}
    assert touched <= allowed, touched - allowed
    names = [c.split()[0].upper() for c in commands]
    assert names.count("EVALSHA") == 1, names  # one round trip
    assert not {"SCAN", "KEYS", "HGETALL", "ZRANGE", "SMEMBERS"} & set(names), names
    (fetch,) = [c for c in commands if c.upper().startswith("HMGET")]
    assert len(fetch.split()) - 2 == len(got)  # only the entries returned are read

    some = [e.memory_id for e in model.read_scope(Scope(context_id="c1"))][:40]
    got, commands = watched(model, redis_prefix, lambda: model.get_many(some, "a:b"))
    allowed_ids = {e.memory_id for e in select(view.entries.values(), Scope(), principals)}
    assert set(got) == {m for m in some if m in allowed_ids}
    names = [c.split()[0].upper() for c in commands]
    assert names.count("EVALSHA") == 1, names
    fetches = [c for c in commands if c.upper().startswith("HMGET")]
    assert sum(len(c.split()) - 2 for c in fetches) == len(got)


def test_async_reads_by_an_agent_equal_the_sync_ones(model: RedisReadModel) -> None:
    log = InProcessLog()
    fill(log, 600, seed=5)
    Projector(log, model).catch_up()
    ids = [e.memory_id for e in model.read_scope(Scope())]

    async def main() -> None:
        for reader in [None, *AGENTS]:
            for scope in query_scopes():
                assert await model.read_scope_async(scope, reader) == model.read_scope(
                    scope, reader)
            assert await model.get_many_async(ids, reader) == model.get_many(ids, reader)
        for group in MEMBER_GROUPS:
            assert await model.members_async(group) == model.members(group)
        await model.aclose()

    asyncio.run(main())
