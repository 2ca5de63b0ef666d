"""Rebuilds and replays never serve a partial view: a replay builds beside the old view and
switches atomically (Redis generations, the in-memory model), a view built from nothing makes
its readers wait, and generations left by a process killed while deleting them, or while
building them, are deleted by the next open or commit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import redis

from memswarm_es import SharedMemory
from memswarm_es.log import InProcessLog, SQLEventLog
from memswarm_es.scopes import Scope
from projections.base import ReadModel
from projections.fold import MemoryEntry, fold, select
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector
from projections.redis import RedisReadModel
from projections.runner import ProjectorRunner
from tests.histories import assert_is_fold, fill
from tests.servers_redis import RedisServer
from tests.test_runner import eventually, sqlite_log

ROOT = Path(__file__).resolve().parent.parent
SCOPES = [Scope(), Scope(group_id="g1"), Scope(agent_id="a", context_id="c2")]


class Readers:
    """Threads reading ``read`` over and over, recording every answer that is not ``whole``,
    and how many answers they got while ``building()`` said a build was under way."""

    def __init__(self, read: Callable[[Scope], list[MemoryEntry]],
                 whole: dict[Scope, list[MemoryEntry]], building: Callable[[], bool]) -> None:
        self.read, self.whole, self.building = read, whole, building
        self.partial: list[tuple[Scope, int]] = []
        self.during = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(s,)) for s in SCOPES]

    def _run(self, scope: Scope) -> None:
        while not self._stop.is_set():
            was_building = self.building()
            got = self.read(scope)
            if got != self.whole[scope]:
                self.partial.append((scope, len(got)))
            if was_building:
                self.during += 1

    def __enter__(self) -> Readers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def whole_view(log: InProcessLog | SQLEventLog) -> dict[Scope, list[MemoryEntry]]:
    view = fold(log.read())
    return {s: select(view.entries.values(), s) for s in SCOPES}


def replay_under_readers(log: InProcessLog, model: ReadModel, read_model: ReadModel) -> None:
    Projector(log, model).catch_up()
    whole = whole_view(log)
    replaying = threading.Event()
    with Readers(read_model.read_scope, whole, replaying.is_set) as readers:
        replaying.set()
        assert Projector(log, model, batch_size=500).replay() == log.head()
        replaying.clear()
    assert readers.during > 0, "no read overlapped the replay"
    assert readers.partial == []
    assert_is_fold(model, log)


def test_a_redis_replay_serves_the_old_view_until_the_new_one_is_whole(
        redis_url: str, redis_prefix: str) -> None:
    log = InProcessLog()
    fill(log, 20_000, seed=1)
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    replay_under_readers(log, model, RedisReadModel(redis_url, prefix=redis_prefix))
    left = {k.decode() for k in model.client.scan_iter(match=f"{redis_prefix}:*")}
    assert not any(":g0:" in k or ":s" in k for k in left), left  # old and staging keys gone
    assert model.client.smembers(model.building_key) == set()


def test_an_in_memory_replay_swaps_in_a_whole_view() -> None:
    log = InProcessLog()
    fill(log, 20_000, seed=2)
    model = InMemoryReadModel()
    replay_under_readers(log, model, model)


def test_readers_wait_for_a_view_rebuilt_after_flushdb(own_redis: RedisServer,
                                                       tmp_path: Path) -> None:
    log = SQLEventLog(f"sqlite:///{tmp_path / 'log.db'}", synchronous="OFF")
    fill(log, 20_000, seed=3)
    whole = whole_view(log)
    runner = ProjectorRunner(log, RedisReadModel(own_redis.url, prefix="swarm"), lease_ttl=1,
                             batch_size=200)
    runner.step()
    runner.lease.release(runner.owner)
    admin = redis.Redis.from_url(own_redis.url)
    admin.flushdb()  # the view lost its data; nothing serves it until a runner notices
    runner.start()
    model = RedisReadModel(own_redis.url, prefix="swarm")
    eventually(lambda: model.checkpoint() > 0, what="the rebuild to start")
    # A reader that waits for nothing of its own (project_inline=False, no writes)
    reader = SharedMemory(log, RedisReadModel(own_redis.url, prefix="swarm"),
                          project_inline=False)
    with Readers(lambda s: reader.read_scope(**{n: v for n, v in s.parts()}), whole,
                 lambda: model.checkpoint() < 20_000) as readers:
        eventually(lambda: model.checkpoint() == 20_000, what="the rebuild to finish")
    runner.stop()
    assert readers.during > 0, "no read overlapped the rebuild"
    assert readers.partial == []
    assert runner.rebuilds == 1
    admin.close()


MARKER = "forget-me-7f3a"

_KILLED_WHILE_DELETING = """
import os, signal, sys
from redis.commands.core import Script
from projections import redis as view

calls = 0
call = Script.__call__

def dying(self, *args, **kwargs):
    global calls
    if self.script == view._COLLECT:
        calls += 1
        if calls == 2:  # one chunk of the old generation deleted, then killed
            os.kill(os.getpid(), signal.SIGKILL)
    return call(self, *args, **kwargs)

Script.__call__ = dying
from memswarm_es.cli import main
sys.exit(main(sys.argv[1:]))
"""


def marker_keys(client: redis.Redis, prefix: str) -> set[str]:
    """Keys under ``prefix`` whose content holds the marker."""
    found = set()
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        if client.type(key) == b"hash" and any(
                MARKER.encode() in v for v in client.hvals(key)):
            found.add(key.decode())
    return found


def test_old_generation_of_a_replay_killed_while_deleting_it_goes_on_next_open(
        redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    log_url = sqlite_log(tmp_path, 0)
    mem = SharedMemory(SQLEventLog(log_url), RedisReadModel(redis_url, prefix=redis_prefix))
    secret = mem.write_scope(MARKER, metadata={"agent_id": "a"})
    for n in range(1500):  # many scope indexes: deleting them takes several chunks
        mem.write_scope(n, metadata={"agent_id": f"agent-{n}"})
    mem.close()
    forgetting = SharedMemory(SQLEventLog(log_url), InMemoryReadModel())
    forgetting.forget(secret, reason="erasure")  # in the log; the Redis view is not caught up
    forgetting.close()
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    assert marker_keys(model.client, redis_prefix)
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_WHILE_DELETING, "replay", "--log", log_url, "--into",
         redis_url, "--prefix", redis_prefix],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert model.client.smembers(model.garbage_key) == {b"0"}  # recorded when it switched
    assert marker_keys(model.client, redis_prefix)  # the killed collector left it
    assert model.get(secret) is None  # the new generation serves, without it
    RedisReadModel(redis_url, prefix=redis_prefix).close()  # any later open finishes the job
    assert marker_keys(model.client, redis_prefix) == set()
    assert model.client.smembers(model.garbage_key) == set()
    left = {k.decode() for k in model.client.scan_iter(match=f"{redis_prefix}:*")}
    assert not any(":g0:" in k for k in left), left
    assert_is_fold(model, SQLEventLog(log_url))


def test_a_staging_generation_whose_builder_stopped_is_deleted(redis_url: str,
                                                               redis_prefix: str) -> None:
    log = InProcessLog()
    fill(log, 2000, seed=4)
    model = RedisReadModel(redis_url, prefix=redis_prefix, stage_ttl=0.3)
    Projector(log, model).catch_up()
    staged = model.staging()
    assert staged is not None
    Projector(log, staged, batch_size=500).catch_up(until=1000)  # then its builder dies
    gen = staged.meta_key.rsplit(":s", 1)[1]
    assert any(f":g{gen}:" in k.decode() for k in model.client.scan_iter(f"{redis_prefix}:*"))
    eventually(lambda: not model.client.exists(staged.meta_key), what="the stage to expire")
    fill(log, 10, seed=5)
    Projector(log, model).catch_up()  # any commit collects it
    left = {k.decode() for k in model.client.scan_iter(match=f"{redis_prefix}:*")}
    assert not any(f":g{gen}:" in k for k in left), left
    assert model.client.smembers(model.building_key) == set()
    assert_is_fold(model, log)


def test_readers_wait_for_a_replay_of_a_view_that_lost_its_data(own_redis: RedisServer) -> None:
    log = InProcessLog()
    fill(log, 20_000, seed=6)
    model = RedisReadModel(own_redis.url, prefix="swarm")
    Projector(log, model).catch_up()
    redis.Redis.from_url(own_redis.url).flushdb()  # nothing old to serve during the replay
    replay = threading.Thread(target=Projector(log, model, batch_size=200).replay)
    replay.start()
    eventually(lambda: model.client.hget(model.meta_key, "rebuilding") is not None
               or not replay.is_alive(), what="the replay to mark the view")
    reader = RedisReadModel(own_redis.url, prefix="swarm")
    with Readers(reader.read_scope, whole_view(log), replay.is_alive) as readers:
        replay.join(120)
    assert readers.during > 0, "no read overlapped the replay"
    assert readers.partial == []
    assert_is_fold(model, log)
