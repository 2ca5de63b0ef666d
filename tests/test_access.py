"""Agents act as themselves: the contract of handles, principals, groups and their errors,
on the seed's memories (the state machine in test_access_properties.py covers every path and
read model at random)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from memswarm_es import (
    AsyncSharedMemory,
    InMemorySharedMemory,
    MemoryNotFoundError,
    SharedMemory,
    SQLiteSharedMemory,
)
from memswarm_es.errors import (
    InvalidIdError,
    InvalidInputError,
    InvalidValueError,
    PermissionDeniedError,
)
from memswarm_es.events import EventType


@pytest.fixture(params=["memory", "sqlite"])
def swarm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedMemory]:
    mem: SharedMemory = (InMemorySharedMemory() if request.param == "memory"
                         else SQLiteSharedMemory(str(tmp_path / "swarm.db")))
    yield mem
    mem.close()


def test_the_seed_usage_on_the_unbound_memory_is_unchanged(swarm: SharedMemory) -> None:
    mid = swarm.write_scope("The capital of France is Paris.",
                            metadata={"agent_id": "Agent1", "group_id": "GroupA"},
                            context_id="ctx_1234")
    assert [e.memory_id for e in swarm.read_scope(agent_id="Agent1")] == [mid]
    assert [e.memory_id for e in swarm.read_scope(group_id="GroupA")] == [mid]
    assert swarm.read_scope(context_id="ctx_1234")[0].value == "The capital of France is Paris."
    entry = swarm.get(mid)
    assert entry.metadata == {} and entry.created_by == "operator"
    assert (entry.readable_by, entry.writable_by) == (("agent:Agent1", "group:GroupA"),
                                                      ("agent:Agent1",))


def test_an_agent_writes_only_as_itself_and_into_its_groups(swarm: SharedMemory) -> None:
    a1 = swarm.agent("Agent1")
    mid = a1.write_scope("mine", context_id="c")
    entry = swarm.get(mid)
    assert (entry.agent_id, entry.created_by) == ("Agent1", "Agent1")
    head = swarm.log.head()
    with pytest.raises(PermissionDeniedError, match="'Agent1' may not write as agent 'Agent2'"):
        a1.write_scope("forged", metadata={"agent_id": "Agent2"})
    with pytest.raises(PermissionDeniedError, match="write into group 'GroupA'"):
        a1.write_scope("not a member", metadata={"group_id": "GroupA"})
    assert swarm.log.head() == head  # refused: nothing appended
    swarm.join_group("Agent1", "GroupA")
    assert a1.write_scope("a member now", metadata={"group_id": "GroupA"})
    with pytest.raises(InvalidIdError):
        swarm.agent("operator")  # the unbound memory's name, never an agent's


def test_a_memory_an_agent_may_not_read_does_not_exist_for_it(swarm: SharedMemory) -> None:
    secret = swarm.write_scope("secret", metadata={"agent_id": "owner"})
    swarm.update(secret, "secret v2")
    stranger = swarm.agent("stranger")
    never = "01900000-0000-7000-8000-000000000000"
    for memory_id in (secret, never):  # the same answer as for an id never written
        for attempt in (
            lambda m: stranger.get(m),
            lambda m: stranger.history(m),
            lambda m: stranger.update(m, "x", expected_version=99),  # no version leaks
            lambda m: stranger.update(m, "x", event_id=m),  # no retry answer leaks
            lambda m: stranger.delete(m),
            lambda m: stranger.set_permissions(m, readable_by=["*"]),
            lambda m: stranger.forget(m, "please"),
            lambda m: stranger.as_of(2).get(m),
        ):
            with pytest.raises(MemoryNotFoundError) as caught:
                attempt(memory_id)
            assert str(caught.value) == f"no memory {memory_id!r}"
    assert stranger.read_scope() == [] and stranger.audit().events == []
    assert swarm.log.head() == 2


def test_a_reader_that_may_not_write_is_refused_by_name(swarm: SharedMemory) -> None:
    mid = swarm.agent("owner").write_scope("shared", readable_by=["*"])
    reader = swarm.agent("reader")
    assert reader.get(mid).value == "shared"
    for change in (lambda: reader.update(mid, "mine now"), lambda: reader.delete(mid),
                   lambda: reader.set_permissions(mid, writable_by=["*"]),
                   lambda: reader.forget(mid, "mine")):
        with pytest.raises(PermissionDeniedError) as caught:
            change()
        assert caught.value.agent_id == "reader" and mid in str(caught.value)
    assert swarm.get(mid).version == 1
    swarm.agent("owner").set_permissions(mid, writable_by=["agent:reader"])
    assert reader.update(mid, "allowed now") == 3
    assert swarm.get(mid).updated_by == "reader"


@pytest.mark.parametrize("principals", [
    "agent:x", ["agent:"], ["user:x"], [5], ["group:a\nb"], ["agent: x".replace(" ", "\x00")],
    [None], "*",
])
def test_what_is_not_a_list_of_principals_is_refused(swarm: SharedMemory,
                                                     principals: object) -> None:
    for attempt in (lambda: swarm.write_scope("v", readable_by=principals),  # type: ignore
                    lambda: swarm.write_scope("v", metadata={"writable_by": principals})):
        with pytest.raises(InvalidValueError):
            attempt()
    assert swarm.log.head() == 0


def test_permissions_are_given_once_and_never_come_back_as_metadata(
        swarm: SharedMemory) -> None:
    mid = swarm.write_scope("v", metadata={"agent_id": "a", "readable_by": ["*"], "k": 1})
    entry = swarm.get(mid)
    assert entry.metadata == {"k": 1} and entry.readable_by == ("*",)
    with pytest.raises(InvalidInputError, match="both"):
        swarm.write_scope("v", metadata={"readable_by": ["*"]}, readable_by=["*"])
    swarm.update(mid, metadata={"k": 2, "writable_by": ["group:g"]})
    entry = swarm.get(mid)
    assert entry.metadata == {"k": 2} and entry.writable_by == ("group:g",)
    assert swarm.history(mid)[-1].metadata == {"k": 2}


def test_a_group_id_never_reads_as_an_agent_id(swarm: SharedMemory) -> None:
    mid = swarm.write_scope("for the group called a", readable_by=["group:a"])
    assert swarm.agent("a").read_scope() == []  # agent a is no member of group a
    swarm.join_group("b", "a")
    assert [e.memory_id for e in swarm.agent("b").read_scope()] == [mid]
    assert swarm.agent("a").read_scope() == []


def test_admins_manage_members_and_anyone_may_leave(swarm: SharedMemory) -> None:
    with pytest.raises(PermissionDeniedError):
        swarm.agent("x").join_group("x", "g")  # no one joins by itself
    swarm.join_group("boss", "g", admin=True)
    boss, worker = swarm.agent("boss"), swarm.agent("worker")
    boss.join_group("worker", "g")
    with pytest.raises(PermissionDeniedError, match="change the members of group 'g'"):
        worker.join_group("friend", "g")
    with pytest.raises(PermissionDeniedError):
        worker.leave_group("boss", "g")
    assert worker.members("g") == {"boss": True, "worker": False}
    with pytest.raises(PermissionDeniedError):
        swarm.agent("outsider").members("g")
    boss.join_group("worker", "g", admin=True)  # a grant
    assert swarm.members("g")["worker"] is True
    position = swarm.log.head()
    worker.leave_group("worker", "g")
    assert swarm.members("g") == {"boss": True} and worker.groups() == {}
    assert swarm.as_of(position).members("g") == {"boss": True, "worker": True}
    joined = [e for e in swarm.audit().events if e.type == EventType.GROUP_JOINED]
    assert [(e.scope.agent_id, e.actor) for e in joined] == [
        ("boss", "operator"), ("worker", "boss"), ("worker", "boss")]


def test_leaving_a_group_hides_its_memories_on_every_path(swarm: SharedMemory) -> None:
    swarm.join_group("w", "g")
    mid = swarm.write_scope("group plan", metadata={"agent_id": "lead", "group_id": "g"})
    worker = swarm.agent("w")
    sub = worker.subscribe(after=0)
    assert [v.memory_id for v in sub.poll(1)] == [mid]
    assert worker.history(mid) and worker.as_of(2).read_scope()
    swarm.leave_group("w", "g")
    swarm.update(mid, "new plan")
    assert worker.read_scope() == [] and worker.as_of(2).read_scope() == []
    assert sub.poll(0.2) == []
    with pytest.raises(MemoryNotFoundError):
        worker.history(mid)
    assert [e.type for e in worker.audit().events] == [EventType.GROUP_JOINED,
                                                       EventType.GROUP_LEFT]


def test_a_forgotten_memory_keeps_its_last_permissions(swarm: SharedMemory) -> None:
    swarm.join_group("member", "g")
    mid = swarm.agent("owner").write_scope("private later", metadata={"agent_id": "owner"},
                                           readable_by=["group:g", "agent:owner"])
    swarm.agent("owner").set_permissions(mid, readable_by=["agent:owner"])
    swarm.agent("owner").forget(mid, "erasure")
    assert [v.type for v in swarm.agent("owner").history(mid)][-1] == "memory.forgotten"
    with pytest.raises(MemoryNotFoundError):  # its write's payload (group:g) is gone
        swarm.agent("member").history(mid)


def test_async_handles_have_the_same_operations() -> None:
    async def main() -> None:
        async with AsyncSharedMemory(InMemorySharedMemory()) as amem:
            await amem.join_group("A", "G", admin=True)
            a = amem.agent("A")
            mid = await a.write_scope("hello", metadata={"group_id": "G"})
            await a.join_group("B", "G")
            b = amem.agent("B")
            assert [e.memory_id for e in await b.read_scope(group_id="G")] == [mid]
            assert (await b.get(mid)).value == "hello"
            with pytest.raises(PermissionDeniedError):
                await b.update(mid, "no")
            await b.leave_group("B", "G")
            with pytest.raises(MemoryNotFoundError):
                await b.get(mid)
            assert await amem.members("G") == {"A": True}

    asyncio.run(main())
