"""Property: for hypothesis-generated histories (memberships and permission changes among
them), the Redis view equals the in-memory view and the fold of the log, scope by scope and
reader by reader; projected inline or by a separate runner (read-your-writes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant, rule

from memswarm_es import SharedMemory
from memswarm_es.events import EventType, NewEvent
from memswarm_es.log import InProcessLog
from memswarm_es.scopes import Scope
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector
from projections.redis import RedisReadModel
from projections.runner import ProjectorRunner
from tests.test_properties import AGENTS, MemoryMachine

URL: list[str] = []
SCOPES = [Scope(), Scope("a"), Scope("a:b"), Scope("ä"), Scope(group_id="g1"),
          Scope(group_id="g1/x"), Scope(context_id="c1"), Scope(context_id="%"),
          Scope("a", "g1"), Scope("b", "g2", "c1"), Scope(None, "g1", "%")]
READERS = [None, "a", "b", "a:b", "ä"]
# Groups named like agents too: a principal must never read as the other kind.
MEMBER_GROUPS = ["g1", "g2", "g1/x", "a", "a:b"]
PRINCIPALS = st.lists(st.sampled_from(["*", "agent:a", "agent:b", "agent:a:b", "agent:ä",
                                       "group:g1", "group:g2", "group:g1/x", "group:a",
                                       "group:a:b"]), max_size=3)


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

    def _record(self, event: NewEvent) -> None:
        """Append an event the facade has no method for (yet) to the log."""
        self.mem.log.append([event])

    @rule(agent=AGENTS, group=st.sampled_from(MEMBER_GROUPS), admin=st.booleans())
    def join(self, agent: str, group: str, admin: bool) -> None:
        self._record(NewEvent.create(EventType.GROUP_JOINED, Scope(agent, group), "operator",
                                     {"admin": admin}))

    @rule(agent=AGENTS, group=st.sampled_from(MEMBER_GROUPS))
    def leave(self, agent: str, group: str) -> None:
        self._record(NewEvent.create(EventType.GROUP_LEFT, Scope(agent, group), "operator", {}))

    @rule(memory_id=MemoryMachine.memories, readers=PRINCIPALS)
    def set_readers(self, memory_id: str, readers: list[str]) -> None:
        ref = self.ref[memory_id]
        if not ref.live:
            return
        ref.version += 1
        self._record(NewEvent.create(EventType.MEMORY_UPDATED, Scope(*ref.scope), "operator",
                                     {"readable_by": readers}, memory_id=memory_id,
                                     version=ref.version))

    @invariant()
    def every_scope_equals_the_in_memory_view(self) -> None:
        reference = InMemoryReadModel()
        Projector(self.mem.log, reference).catch_up()
        self.mem.sync()
        ids = [*self.ref, "nothing"]
        for reader in READERS:
            for scope in SCOPES:
                assert self.model.read_scope(scope, reader) == reference.read_scope(
                    scope, reader), (scope, reader)
            assert self.model.get_many(ids, reader) == reference.get_many(ids, reader), reader
        for agent in READERS[1:]:
            assert self.model.groups_of(agent) == reference.groups_of(agent), agent
        for group in MEMBER_GROUPS:
            assert self.model.members(group) == reference.members(group), group


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
