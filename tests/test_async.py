"""The asyncio API: a twin for every facade operation, 100 concurrent tasks writing and reading
on every backend, and an event loop that keeps running while a read waits."""

from __future__ import annotations

import asyncio
import inspect
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
from memswarm_es.agent import AgentMemory
from memswarm_es.aio import AsyncAgentMemory
from memswarm_es.errors import ReadModelBehindError
from memswarm_es.log import InProcessLog, SQLEventLog
from memswarm_es.scopes import Scope
from projections.fold import fold, select
from projections.redis import RedisReadModel
from projections.runner import ProjectorRunner

# Every public method of the facade is an operation, but for handing its read model or log over and
# making an agent's handle (whose own operations are checked below).
OPERATIONS = [name for name, member in vars(SharedMemory).items()
              if callable(member) and not name.startswith("_")
              and name not in ("lend_read_model", "lend_log", "agent")]
AGENT_OPERATIONS = [name for name, member in vars(AgentMemory).items()
                    if callable(member) and not name.startswith("_")]


def test_every_facade_operation_has_an_awaitable_twin() -> None:
    assert {"write_scope", "read_scope", "forget", "as_of", "audit"} <= set(OPERATIONS)
    for name in OPERATIONS:
        assert inspect.iscoroutinefunction(getattr(AsyncSharedMemory, name)), name
    assert {"write_scope", "read_scope", "set_permissions", "join_group"} <= set(AGENT_OPERATIONS)
    for name in AGENT_OPERATIONS:
        assert inspect.iscoroutinefunction(getattr(AsyncAgentMemory, name)), name


def test_audit_time_travel_and_forget_awaited() -> None:
    async def main() -> None:
        async with AsyncSharedMemory(InMemorySharedMemory()) as amem:
            m = await amem.write_scope("secret", metadata={"agent_id": "a"})
            await amem.update(m, "secret v2")
            kept = await amem.digest()
            assert (await amem.as_of(1)).get(m).value == "secret"
            assert [e.position for e in (await amem.audit(agent_id="a")).events] == [1, 2]
            await amem.forget(m, reason="erasure")
            assert (await amem.verify()).ok and await amem.extends(kept)
            assert (await amem.as_of(2)).get(m).value is None

    asyncio.run(main())


@pytest.fixture(params=["memory", "sqlite", "redis", "redis+runner"])
def amem(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str,
         redis_prefix: str) -> Iterator[AsyncSharedMemory]:
    runner = None
    if request.param == "memory":
        mem: SharedMemory = InMemorySharedMemory()
    elif request.param == "sqlite":
        mem = SQLiteSharedMemory(str(tmp_path / "m.db"), synchronous="NORMAL")
    elif request.param == "redis":
        mem = SharedMemory(SQLEventLog(f"sqlite:///{tmp_path / 'm.db'}", synchronous="NORMAL"),
                           RedisReadModel(redis_url, prefix=redis_prefix))
    else:
        log = InProcessLog()
        runner = ProjectorRunner(log, RedisReadModel(redis_url, prefix=redis_prefix))
        runner.start()
        mem = SharedMemory(log, RedisReadModel(redis_url, prefix=redis_prefix),
                           project_inline=False, wait_timeout=60)
    yield AsyncSharedMemory(mem)
    if runner is not None:
        runner.stop()


def test_100_concurrent_tasks_write_and_read(amem: AsyncSharedMemory) -> None:
    async def agent(n: int) -> None:
        me = {"agent_id": f"t{n}", "group_id": f"g{n % 5}"}
        ids = [await amem.write_scope((n, i), metadata=me) for i in range(3)]
        mine = await amem.read_scope(agent_id=f"t{n}")  # its own writes, at once
        assert [e.memory_id for e in mine] == ids
        assert await amem.update(ids[0], "changed", expected_version=1) == 2
        assert (await amem.get(ids[0])).value == "changed"
        await amem.delete(ids[1])
        with pytest.raises(MemoryNotFoundError):
            await amem.get(ids[1])
        assert [v.version for v in await amem.history(ids[0])] == [1, 2]
        left = await amem.read_scope(agent_id=f"t{n}", group_id=f"g{n % 5}")
        assert [e.memory_id for e in left] == [ids[0], ids[2]]

    async def main() -> None:
        await asyncio.gather(*(agent(n) for n in range(100)))
        assert await amem.sync() == amem.memory.log.head() == 500
        assert await amem.lag() == 0
        everything = await amem.read_scope()
        assert len(everything) == 200
        view = fold(amem.memory.log.read())
        assert everything == select(view.entries.values(), Scope())
        for g in range(5):
            group = await amem.read_scope(group_id=f"g{g}")
            assert group == select(view.entries.values(), Scope(group_id=f"g{g}"))
        assert await amem.replay() == 500
        assert await amem.read_scope() == everything
        await amem.close()

    asyncio.run(main())


def test_the_event_loop_runs_while_a_read_waits_for_the_projector(redis_url: str,
                                                                  redis_prefix: str) -> None:
    log = InProcessLog()
    mem = AsyncSharedMemory(SharedMemory(log, RedisReadModel(redis_url, prefix=redis_prefix),
                                         project_inline=False, wait_timeout=0.2))
    runner = ProjectorRunner(log, RedisReadModel(redis_url, prefix=redis_prefix))

    async def main() -> None:
        mid = await mem.write_scope("x", metadata={"agent_id": "a"})
        with pytest.raises(ReadModelBehindError):
            await mem.read_scope(agent_id="a")  # no projector: it says so instead of lying
        reading = asyncio.create_task(mem.wait_for(timeout=30))
        ticks = 0
        while ticks < 20:  # the loop is free while the read waits
            await asyncio.sleep(0.005)
            ticks += 1
        assert not reading.done()
        assert await mem.lag() == 1
        runner.start()
        assert await reading == 1
        assert [e.memory_id for e in await mem.read_scope(agent_id="a")] == [mid]
        await mem.close()

    try:
        asyncio.run(main())
    finally:
        runner.stop()


def test_async_memories_in_several_event_loops(redis_url: str, redis_prefix: str) -> None:
    mem = AsyncSharedMemory(SharedMemory(InProcessLog(),
                                         RedisReadModel(redis_url, prefix=redis_prefix)))

    async def once(n: int) -> int:
        await mem.write_scope(n, metadata={"agent_id": "a"})
        return len(await mem.read_scope(agent_id="a"))

    assert [asyncio.run(once(n)) for n in range(3)] == [1, 2, 3]


def test_300_concurrent_readers_of_a_runner_fed_view_wait_for_connections(
        redis_url: str, redis_prefix: str) -> None:
    """More tasks than the pool has connections: they wait for one, none fails."""
    log = InProcessLog()
    runner = ProjectorRunner(log, RedisReadModel(redis_url, prefix=redis_prefix))
    runner.start()
    writer = SharedMemory(log, RedisReadModel(redis_url, prefix=redis_prefix),
                          project_inline=False, wait_timeout=60)
    ids = [writer.write_scope(n, metadata={"agent_id": f"t{n}", "group_id": f"g{n % 3}"})
           for n in range(300)]
    amem = AsyncSharedMemory(SharedMemory(log, RedisReadModel(redis_url, prefix=redis_prefix),
                                          project_inline=False, wait_timeout=60))

    async def reader(n: int) -> None:
        await amem.wait_for(300)
        for _ in range(3):
            mine = await amem.read_scope(agent_id=f"t{n}")
            assert [e.memory_id for e in mine] == [ids[n]]
            assert (await amem.get(ids[n])).value == n
            assert len(await amem.read_scope(group_id=f"g{n % 3}")) == 100

    async def main() -> None:
        await asyncio.gather(*(reader(n) for n in range(300)))
        await amem.close()

    try:
        asyncio.run(main())
    finally:
        runner.stop()
