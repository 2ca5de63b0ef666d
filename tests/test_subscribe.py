"""Subscriptions: every memory version of a scope exactly once and in order, in process at
once, across processes through Redis pub/sub, across a Redis restart, and resumed from a
position."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from memswarm_es import AsyncSharedMemory, InMemorySharedMemory, SharedMemory, SQLiteSharedMemory
from memswarm_es.audit import MemoryVersion
from memswarm_es.errors import ChainBrokenError, InvalidInputError, InvalidScopeError
from memswarm_es.events import MEMORY_EVENT_TYPES
from memswarm_es.log import InProcessLog, SQLEventLog
from memswarm_es.log.base import EventFilter, EventLog
from memswarm_es.scopes import Scope
from projections.redis import RedisReadModel
from projections.runner import ProjectorRunner
from tests.histories import copy_database, memory_events
from tests.servers_redis import RedisServer
from tests.test_runner import eventually

ROOT = Path(__file__).resolve().parent.parent


def expected(log: EventLog, scope: Scope, after: int = 0) -> list[tuple[int, str, int]]:
    return [(e.position, e.memory_id, e.version)  # type: ignore[misc]
            for e in log.query(EventFilter(scope=scope), after=after)
            if e.type in MEMORY_EVENT_TYPES]


def summary(versions: list[MemoryVersion]) -> list[tuple[int, str, int]]:
    return [(v.position, v.memory_id, v.version) for v in versions]


def test_in_process_subscriber_hears_every_version_of_its_scope_in_order() -> None:
    mem = InMemorySharedMemory()
    mem.write_scope("before", metadata={"agent_id": "a", "group_id": "g1"})
    sub = mem.subscribe(group_id="g1")  # from now on
    got: list[MemoryVersion] = []
    reader = threading.Thread(target=lambda: got.extend(v for v in sub))
    reader.start()
    kept = mem.write_scope(1, metadata={"agent_id": "a", "group_id": "g1", "k": "v"},
                           context_id="c")
    other = mem.write_scope(2, metadata={"agent_id": "a", "group_id": "g2"})
    mem.update(kept, 10)
    mem.update(other, 20)
    gone = mem.write_scope(3, metadata={"agent_id": "b", "group_id": "g1"})
    mem.delete(gone)
    eventually(lambda: len(got) == 4, timeout=10, what="four versions")
    sub.close()
    reader.join(5)
    assert not reader.is_alive()
    assert summary(got) == expected(mem.log, Scope(group_id="g1"), after=1)
    assert [(v.type, v.value) for v in got] == [
        ("memory.written", 1), ("memory.updated", 10), ("memory.written", 3),
        ("memory.deleted", None)]
    assert got[0].scope == Scope("a", "g1", "c") and got[0].metadata == {"k": "v"}
    assert sub.position == 7 == mem.log.head()


def test_a_subscriber_resumes_from_the_position_it_last_saw() -> None:
    mem = InMemorySharedMemory()
    for i in range(30):
        mem.write_scope(i, metadata={"agent_id": f"a{i % 3}"})
    first = mem.subscribe(agent_id="a1", after=0)
    got = [next(first) for _ in range(4)]
    first.close()
    for i in range(30, 45):
        mem.write_scope(i, metadata={"agent_id": f"a{i % 3}"})
    again = mem.subscribe(agent_id="a1", after=first.position)
    got += again.poll(timeout=1)
    assert summary(got) == expected(mem.log, Scope("a1"))
    assert len(got) == 15
    with pytest.raises(InvalidScopeError):
        mem.subscribe(team_id="x")


def test_async_subscriber_in_another_memory_hears_a_runner_through_pubsub(
        redis_url: str, redis_prefix: str) -> None:
    log = InProcessLog()
    runner = ProjectorRunner(log, RedisReadModel(redis_url, prefix=redis_prefix))
    runner.start()
    reader = AsyncSharedMemory(SharedMemory(log, RedisReadModel(redis_url, prefix=redis_prefix),
                                            project_inline=False))

    async def main() -> list[MemoryVersion]:
        sub = await reader.subscribe(context_id="c1")
        got: list[MemoryVersion] = []
        want = 0
        for i, event in enumerate(memory_events(300, seed=4)):
            log.append([event])
            want += event.scope.context_id == "c1"
            if i % 50 == 0:
                got += await sub.poll(timeout=0)
        async for version in sub:
            got.append(version)
            if len(got) == want:
                sub.close()
        return got

    try:
        got = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        runner.stop()
    assert summary(got) == expected(log, Scope(context_id="c1"))
    assert got


SUBSCRIBER = """
import json, sys
from memswarm_es import RedisSharedMemory
url, prefix, log_url, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
mem = RedisSharedMemory(url, prefix=prefix, log=log_url, project_inline=False)
print("ready", flush=True)
for n, v in enumerate(mem.subscribe(group_id="g1", after=0), start=1):
    print(json.dumps([v.position, v.memory_id, v.version]), flush=True)
    if n == count:
        break
"""


def test_subscriber_in_another_process_across_a_redis_restart(own_redis: RedisServer,
                                                              tmp_path: Path) -> None:
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    log = SQLEventLog(log_url, synchronous="OFF")
    events = list(memory_events(600, seed=21))
    want = sum(e.scope.group_id == "g1" and e.memory_id is not None for e in events)
    runner = ProjectorRunner(log, RedisReadModel(own_redis.url, prefix="swarm"), lease_ttl=1,
                             batch_size=50)
    runner.start()
    child = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, own_redis.url, "swarm", log_url, str(want)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read() -> None:
        assert child.stdout is not None
        lines.extend(line.strip() for line in child.stdout)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        eventually(lambda: lines[:1] == ["ready"], what="the subscriber to start")
        for start in range(0, 300, 20):
            log.append(events[start:start + 20])
        eventually(lambda: len(lines) > 10, what="the first memories")
        own_redis.restart()  # every key is lost: the runner rebuilds, the subscriber goes on
        for start in range(300, 600, 20):
            log.append(events[start:start + 20])
        assert child.wait(60) == 0, child.stderr.read()  # type: ignore[union-attr]
    finally:
        child.kill()
        runner.stop()
        reader.join(5)
    got = [tuple(json.loads(line)) for line in lines[1:]]
    assert got == expected(log, Scope(group_id="g1"))
    assert runner.rebuilds >= 1


@pytest.mark.parametrize("after", ["x", "3", 2.0, True, -1, 10**6, [1], "head+1"])
def test_a_start_that_is_not_a_position_of_the_log_is_a_typed_error(after: object) -> None:
    mem = InMemorySharedMemory()
    for i in range(5):
        mem.write_scope(i, metadata={"agent_id": "a"})
    start = mem.log.head() + 1 if after == "head+1" else after
    with pytest.raises(InvalidInputError):
        mem.subscribe(agent_id="a", after=start)

    async def main() -> None:
        with pytest.raises(InvalidInputError):
            await AsyncSharedMemory(mem).subscribe(agent_id="a", after=start)

    asyncio.run(main())
    assert len(mem.subscribe(agent_id="a", after=mem.log.head() - 2).poll()) == 2
    assert mem.subscribe(agent_id="a", after=0).position == 0


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize("copy_is", ["shorter", "another history"])
def test_a_subscriber_open_across_a_restore_is_told_not_left_to_skip(
        tmp_path: Path, copy_is: str, asynchronous: bool) -> None:
    """A SQLite file put back from a copy (its backup API) under a subscriber that saw events
    the copy does not hold: its next read raises :class:`ChainBrokenError` instead of
    delivering the copy's later versions after a gap, or on top of another history."""
    path, copy = tmp_path / "swarm.db", tmp_path / "copy.db"
    mem = SQLiteSharedMemory(str(path))
    for i in range(3):
        mem.write_scope(i, {"agent_id": "a"})
    sub = mem.subscribe(agent_id="a", after=0)
    async_sub = asyncio.run(AsyncSharedMemory(mem).subscribe(agent_id="a", after=0))

    def poll() -> list[MemoryVersion]:
        if asynchronous:
            return asyncio.run(async_sub.poll(timeout=1))
        return sub.poll(timeout=1)

    assert len(poll()) == 3
    copy_database(path, copy)
    if copy_is == "another history":
        other = SQLiteSharedMemory(str(copy))
        for i in range(2):
            other.write_scope(f"other {i}", {"agent_id": "a"})
        other.close()
    for i in range(2):
        mem.write_scope(f"lost {i}", {"agent_id": "a"})
    assert [v.value for v in poll()] == ["lost 0", "lost 1"]
    copy_database(copy, path)
    for i in range(3):  # the log grows past the subscriber's position again
        mem.write_scope(f"after {i}", {"agent_id": "a"})
    with pytest.raises(ChainBrokenError) as told:
        poll()
    assert told.value.position == 5
    again = mem.subscribe(agent_id="a", after=0)  # subscribing again reads the log as it is
    assert [v.value for v in again.poll(timeout=1)][3:] == (
        ["other 0", "other 1"] if copy_is == "another history" else []) + [
        f"after {i}" for i in range(3)]
    mem.close()
