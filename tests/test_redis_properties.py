"""Property: for hypothesis-generated histories, the Redis view equals the in-memory view and
the fold of the log, scope by scope; projected inline or by a separate runner (read-your-writes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant

from memswarm_es import SharedMemory
from memswarm_es.log import InProcessLog
from memswarm_es.scopes import Scope
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector
from projections.redis import RedisReadModel
from projections.runner import ProjectorRunner
from tests.test_properties import MemoryMachine

URL: list[str] = []
SCOPES = [Scope(), Scope("a"), Scope("a:b"), Scope("ä"), Scope(group_id="g1"),
          Scope(group_id="g1/x"), Scope(context_id="c1"), Scope(context_id="%"),
          Scope("a", "g1"), Scope("b", "g2", "c1"), Scope(None, "g1", "%")]


@pytest.fixture(autouse=True)
def _redis(redis_url: str) -> Iterator[None]:
    URL[:] = [redis_url]
    yield


class RedisMemoryMachine(MemoryMachine):
    """The foundation's machine, on a Redis read model projected inline."""

    def open(self) -> SharedMemory:
        self.model = RedisReadModel(URL[0], prefix=f"memswarm-prop-{uuid.uuid4().hex}")
        return SharedMemory(InProcessLog(), self.model)

    def teardown(self) -> None:
        self.model.drop()
        super().teardown()

    @invariant()
    def every_scope_equals_the_in_memory_view(self) -> None:
        reference = InMemoryReadModel()
        Projector(self.mem.log, reference).catch_up()
        self.mem.sync()
        for scope in SCOPES:
            assert self.model.read_scope(scope) == reference.read_scope(scope), scope


class RunnerMemoryMachine(RedisMemoryMachine):
    """The same, with the read model projected by a runner thread: every read must still see
    the writes made before it (read-your-writes)."""

    def open(self) -> SharedMemory:
        log = InProcessLog()
        self.model = RedisReadModel(URL[0], prefix=f"memswarm-prop-{uuid.uuid4().hex}")
        self.runner = ProjectorRunner(log, RedisReadModel(URL[0], prefix=self.model.prefix),
                                      batch_size=7)
        self.runner.start()
        return SharedMemory(log, self.model, project_inline=False, wait_timeout=30)

    def teardown(self) -> None:
        self.runner.stop()
        self.runner.read_model.close()
        super().teardown()


SETTINGS = settings(max_examples=40, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
TestRedisInline = RedisMemoryMachine.TestCase
TestRedisInline.settings = SETTINGS
TestRedisRunner = RunnerMemoryMachine.TestCase
TestRedisRunner.settings = settings(SETTINGS, max_examples=30)
