"""The projector runner against a real redis-server: following the log, lag and
read-your-writes, the lease, racing projectors, SIGKILL mid-projection, FLUSHDB, a checkpoint
ahead of the log, and the ``memswarm project`` / ``memswarm replay`` commands."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from memswarm_es import SharedMemory
from memswarm_es.cli import main
from memswarm_es.errors import CheckpointConflictError, ReadModelBehindError
from memswarm_es.events import Event
from memswarm_es.log import InProcessLog, SQLEventLog
from projections.fold import Change, MembershipChange
from projections.projector import Projector
from projections.redis import RedisReadModel
from projections.runner import ProjectorRunner
from tests.histories import assert_is_fold, fill, memory_events
from tests.servers_redis import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        time.sleep(0.01)


def sqlite_log(tmp_path: Path, events: int, seed: int = 0) -> str:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = SQLEventLog(url, synchronous="OFF")
    fill(log, events, seed)
    log.close()
    return url


@contextlib.contextmanager
def unmarked(model: RedisReadModel) -> Iterator[int]:
    """Look at a view being built from nothing as it stands (readers would wait): lift the
    mark for the body, and put it back."""
    target = int(model.client.hget(model.meta_key, "rebuilding") or 0)
    model.client.hdel(model.meta_key, "rebuilding")
    try:
        yield target
    finally:
        model.client.hset(model.meta_key, "rebuilding", target)


def spawn_projector(log_url: str, redis_url: str, prefix: str,
                    *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "memswarm_es.cli", "project", "--log", log_url, "--into",
         redis_url, "--prefix", prefix, "--report-every", "60", *extra],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)


def test_runner_follows_the_log_and_reads_wait_for_their_writes(
        redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    log = SQLEventLog(f"sqlite:///{tmp_path / 'log.db'}", synchronous="OFF")
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    mem = SharedMemory(log, model, project_inline=False, wait_timeout=0.3)
    ids = [mem.write_scope(i, metadata={"agent_id": "a", "group_id": "g"}) for i in range(30)]
    assert mem.lag() == 30 and mem.last_position == 30
    with pytest.raises(ReadModelBehindError) as behind:
        mem.read_scope(agent_id="a")  # no runner yet: refusing beats answering without them
    assert (behind.value.position, behind.value.checkpoint) == (30, 0)
    runner = ProjectorRunner(log, RedisReadModel(redis_url, prefix=redis_prefix), batch_size=7)
    runner.start()
    try:
        assert [e.memory_id for e in mem.read_scope(agent_id="a")] == ids
        for i in range(20):  # each read sees the write just before it
            m = mem.write_scope(i, metadata={"agent_id": "b"})
            assert mem.get(m).value == i
        assert mem.sync() == 50
        status = runner.status()
        assert (status.holding, status.lag, status.head) == (True, 0, 50)
        assert mem.lag() == 0
    finally:
        runner.stop()
    assert_is_fold(model, log)


class RecordingModel(RedisReadModel):
    """Records every commit that Redis accepted and every one it refused."""

    def __init__(self, url: str, prefix: str, commits: list[tuple[int, int]],
                 refused: list[int]) -> None:
        super().__init__(url, prefix=prefix)
        self.commits = commits
        self.refused = refused

    def commit(self, changes: Sequence[Change], expected_checkpoint: int,
               checkpoint: int, events: Sequence[Event] = (),
               memberships: Sequence[MembershipChange] = ()) -> None:
        try:
            super().commit(changes, expected_checkpoint, checkpoint, events, memberships)
        except CheckpointConflictError:
            self.refused.append(expected_checkpoint)
            raise
        self.commits.append((expected_checkpoint, checkpoint))

    @contextlib.contextmanager
    def commit_sender(self) -> Iterator[Callable[..., Callable[[], None]]]:
        """The projector's commits (sent, each waited for later), recorded as they end."""
        with super().commit_sender() as send:
            def recorded(changes: Sequence[Change], expected_checkpoint: int, checkpoint: int,
                         *rest: Any) -> Callable[[], None]:
                wait = send(changes, expected_checkpoint, checkpoint, *rest)

                def waited() -> None:
                    try:
                        wait()
                    except CheckpointConflictError:
                        self.refused.append(expected_checkpoint)
                        raise
                    self.commits.append((expected_checkpoint, checkpoint))

                return waited

            yield recorded


def test_projectors_racing_apply_every_event_exactly_once(redis_url: str,
                                                          redis_prefix: str) -> None:
    log = InProcessLog()
    commits: list[tuple[int, int]] = []
    refused: list[int] = []
    writing = threading.Event()
    writing.set()

    def write() -> None:
        events = list(memory_events(4000, seed=7))
        for start in range(0, len(events), 40):
            log.append(events[start:start + 40])
        writing.clear()

    def project(seed: int) -> None:
        model = RecordingModel(redis_url, redis_prefix, commits, refused)
        projector = Projector(log, model, batch_size=random.Random(seed).randint(1, 60))
        while writing.is_set():
            projector.catch_up()
        projector.catch_up()
        model.close()

    threads = [threading.Thread(target=write)]
    threads += [threading.Thread(target=project, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert refused, "the projectors never raced"
    chain = sorted(commits)
    assert chain[0][0] == 0 and chain[-1][1] == log.head() == 4000
    for (_, end), (start, _) in itertools.pairwise(chain):
        assert end == start  # no event applied twice, none skipped
    assert_is_fold(RedisReadModel(redis_url, prefix=redis_prefix), log)


def test_projector_killed_mid_projection_resumes_exactly(redis_url: str, redis_prefix: str,
                                                         tmp_path: Path) -> None:
    log_url = sqlite_log(tmp_path, 8_000, seed=3)
    log = SQLEventLog(log_url)
    head = log.head()
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    seen = []
    for round_ in range(1, 5):
        child = spawn_projector(log_url, redis_url, redis_prefix, "--batch-size", "25",
                                "--lease-ttl", "1")
        target = round_ * head // 6
        def reached(t: int = target, c: subprocess.Popen[str] = child) -> bool:
            return model.checkpoint() >= t or c.poll() is not None

        eventually(reached, what=f"checkpoint {target}")
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, child.stderr.read()  # type: ignore[union-attr]
        checkpoint = model.checkpoint()
        assert 0 < checkpoint < head  # killed in the middle of the projection
        with unmarked(model) as target:
            assert target == head  # readers wait for the build rather than see part of it
            assert_is_fold(model, log)  # the batch it was in is wholly applied or not at all
        seen.append(checkpoint)
    assert seen == sorted(seen)
    finish = spawn_projector(log_url, redis_url, redis_prefix, "--once", "--lease-ttl", "1")
    assert finish.wait(120) == 0, finish.stderr.read()  # type: ignore[union-attr]
    assert model.checkpoint() == head
    assert_is_fold(model, log)


def test_one_runner_applies_at_a_time_and_another_takes_over(redis_url: str,
                                                             redis_prefix: str,
                                                             tmp_path: Path) -> None:
    log_url = sqlite_log(tmp_path, 500)
    log = SQLEventLog(log_url)
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    lease = model.lease()
    child = spawn_projector(log_url, redis_url, redis_prefix, "--lease-ttl", "1")
    mine = f"{socket.gethostname()}:{child.pid}:"
    try:
        eventually(lambda: (lease.holder() or "").startswith(mine), what="the child's lease")
        standby = ProjectorRunner(log, RedisReadModel(redis_url, prefix=redis_prefix),
                                  lease_ttl=1, batch_size=50)
        for _ in range(3):
            assert standby.step() is None and not standby.holding
        eventually(lambda: model.checkpoint() == 500, what="the child to project")
        child.send_signal(signal.SIGKILL)
        child.wait()
        fill(log, 300, seed=9)
        standby.start()
        eventually(lambda: standby.holding and model.checkpoint() == 800, what="takeover")
        assert lease.holder() == standby.owner
        standby.stop()
        assert lease.holder() is None  # released on the way out
    finally:
        child.kill()
        child.wait()
    assert_is_fold(model, log)


def test_memswarm_project_stops_on_sigterm_and_frees_the_lease(
        redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    log_url = sqlite_log(tmp_path, 100)
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    child = spawn_projector(log_url, redis_url, redis_prefix)
    eventually(lambda: model.checkpoint() == 100, what="the projection")
    assert model.lease().holder() is not None
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == 0, child.stderr.read()  # type: ignore[union-attr]
    assert model.lease().holder() is None
    closed = main(["project", "--log", log_url, "--into", "redis://127.0.0.1:1/0", "--once"])
    assert closed == 1  # an unreachable Redis is reported, not a traceback


def test_flushdb_under_a_running_projector_rebuilds_and_converges(
        own_redis: RedisServer, tmp_path: Path) -> None:
    log = SQLEventLog(f"sqlite:///{tmp_path / 'log.db'}", synchronous="OFF")
    fill(log, 3000, seed=11)
    progress: list[int] = []
    model = RedisReadModel(own_redis.url, prefix="swarm")
    runner = ProjectorRunner(log, RedisReadModel(own_redis.url, prefix="swarm"), lease_ttl=1,
                             batch_size=100, progress=lambda p, _h: progress.append(p))
    runner.start()
    eventually(lambda: model.checkpoint() == 3000, what="the first projection")
    admin = redis.Redis.from_url(own_redis.url)
    events = list(memory_events(3000, seed=12))
    for start in range(0, 3000, 100):
        log.append(events[start:start + 100])
        if start == 1500:
            admin.flushdb()  # our own server: nothing but this test's data is on it
    eventually(lambda: runner.status().lag == 0 and model.checkpoint() == 6000,
               what="convergence after FLUSHDB")
    runner.stop()
    assert runner.rebuilds >= 1
    drop = next(i for i in range(1, len(progress)) if progress[i] < progress[i - 1])
    assert progress[drop] <= 100 + 100  # the rebuild started again near position 0
    assert_is_fold(model, log)
    admin.close()


def test_memswarm_project_once_and_replay(redis_url: str, redis_prefix: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    log_url = sqlite_log(tmp_path, 2500, seed=5)
    args = ["--log", log_url, "--into", redis_url, "--prefix", redis_prefix]
    assert main(["project", *args, "--once", "--batch-size", "500"]) == 0
    out = capsys.readouterr().out
    assert "projected: 2500/2500 events (100%)" in out
    assert "checkpoint 2500, head 2500, lag 0" in out
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    log = SQLEventLog(log_url)
    assert_is_fold(model, log)
    model.client.hset(model.meta_key, "checkpoint", 10)  # a damaged read model
    assert main(["replay", *args]) == 0
    out = capsys.readouterr().out
    assert "replayed: 2500/2500 events (100%)" in out and "read model at position 2500" in out
    assert model.client.hget(model.meta_key, "gen") == b"1"
    assert_is_fold(model, log)


def test_memswarm_project_exits_non_zero_when_its_projector_dies(
        redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    """Another program overwrote the view's keys: waiting does not cure that, so the projector
    stops and the command exits non-zero (a supervisor sees it and restarts it)."""
    log_url = sqlite_log(tmp_path, 300)
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    child = spawn_projector(log_url, redis_url, redis_prefix, "--lease-ttl", "1")
    try:
        eventually(lambda: model.checkpoint() == 300, what="the projection")
        model.client.delete(model.meta_key)
        model.client.set(model.meta_key, "another program's data")
        assert child.wait(60) == 1
        assert "projector stopped" in child.stderr.read()  # type: ignore[union-attr]
    finally:
        child.kill()
        child.wait()
    assert model.client.get(model.meta_key) == b"another program's data"
