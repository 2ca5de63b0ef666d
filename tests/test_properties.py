"""Property: any interleaving of writes, updates and deletes by several agents leaves the view
equal to a plain reference model, to the fold of the log, to a replay, and to a reopened file."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from memswarm_es import (
    MemoryNotFoundError,
    Scope,
    SharedMemory,
    SQLiteSharedMemory,
    VersionConflictError,
)
from memswarm_es.events import MAX_DEPTH, _where_not_storable, content_problem
from memswarm_es.memory import InMemorySharedMemory
from projections.fold import fold, select
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector

AGENTS = st.sampled_from(["a", "b", "a:b", "ä"])
GROUPS = st.sampled_from([None, "g1", "g2", "g1/x"])
CONTEXTS = st.sampled_from([None, "c1", "%"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
    | st.binary(max_size=10) | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)
METADATA = st.dictionaries(st.sampled_from(["topic", "score", "tags"]), VALUES, max_size=2)


@dataclass
class Ref:
    value: Any
    metadata: dict[str, Any]
    scope: tuple[str | None, str | None, str | None]
    version: int
    position: int = 0
    live: bool = True


class MemoryMachine(RuleBasedStateMachine):
    """Drives one memory and a dict model side by side."""

    memories = Bundle("memories")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.mem: SharedMemory = self.open()
        self.ref: dict[str, Ref] = {}
        self.writes = 0

    def open(self) -> SharedMemory:
        return InMemorySharedMemory()

    def teardown(self) -> None:
        self.mem.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(target=memories, agent=AGENTS, group=GROUPS, context=CONTEXTS, value=VALUES,
          metadata=METADATA)
    def write(self, agent: str, group: str | None, context: str | None, value: Any,
              metadata: dict[str, Any]) -> str:
        memory_id = self.mem.write_scope(value, metadata={"agent_id": agent, "group_id": group,
                                                          **metadata}, context_id=context)
        self.writes += 1
        self.ref[memory_id] = Ref(value, metadata, (agent, group, context), 1,
                                  position=self.writes)
        return memory_id

    @rule(memory_id=memories, value=VALUES, stale=st.booleans(), named=st.booleans(),
          metadata=st.none() | METADATA)
    def update(self, memory_id: str, value: Any, stale: bool, named: bool,
               metadata: dict[str, Any] | None) -> None:
        ref = self.ref[memory_id]
        stale_version = ref.version + 1 if ref.version == 1 else ref.version - 1
        expected = (stale_version if stale else ref.version) if named else None
        try:
            version = self.mem.update(memory_id, value, metadata, expected_version=expected)
        except MemoryNotFoundError:
            assert not ref.live
            return
        except VersionConflictError:
            assert ref.live and named and stale
            return
        assert ref.live and not (named and stale)
        assert version == ref.version + 1
        ref.value, ref.version = value, version
        if metadata is not None:
            ref.metadata = metadata

    @rule(memory_id=memories, named=st.booleans())
    def delete(self, memory_id: str, named: bool) -> None:
        ref = self.ref[memory_id]
        try:
            self.mem.delete(memory_id, expected_version=ref.version if named else None)
        except MemoryNotFoundError:
            assert not ref.live
            return
        ref.live = False

    @rule(agent=st.none() | AGENTS, group=GROUPS, context=CONTEXTS)
    def read(self, agent: str | None, group: str | None, context: str | None) -> None:
        got = self.mem.read_scope(agent_id=agent, group_id=group, context_id=context)
        expected = sorted(
            (m for m, r in self.ref.items() if r.live and all(
                want is None or want == have
                for want, have in zip((agent, group, context), r.scope, strict=True))),
            key=lambda m: self.ref[m].position)
        assert [e.memory_id for e in got] == expected
        for entry in got:
            ref = self.ref[entry.memory_id]
            assert (entry.value, entry.metadata, entry.version) == (
                ref.value, ref.metadata, ref.version)
            assert (entry.agent_id, entry.group_id, entry.context_id) == ref.scope

    @rule()
    def replay(self) -> None:
        before = self.mem.read_scope()
        self.mem.replay()
        assert self.mem.read_scope() == before

    @invariant()
    def view_equals_fold_of_the_log(self) -> None:
        view = fold(self.mem.log.read())
        assert self.mem.read_scope() == select(view.entries.values(), Scope())
        live = {m for m, r in self.ref.items() if r.live}
        assert set(view.entries) == live

    @invariant()
    def replay_into_a_fresh_read_model_equals_the_live_one(self) -> None:
        fresh = InMemoryReadModel()
        Projector(self.mem.log, fresh, batch_size=3).catch_up()
        assert fresh.read_scope(Scope()) == self.mem.read_scope()


class SQLiteMemoryMachine(MemoryMachine):
    """The same, on a SQLite file shared by two instances (as two processes would), each
    reopened now and then."""

    def __init__(self) -> None:
        super().__init__()
        self.other = self.open()

    def open(self) -> SharedMemory:
        return SQLiteSharedMemory(f"{self.dir}/swarm.db", synchronous="OFF")

    def teardown(self) -> None:
        self.other.close()
        super().teardown()

    @rule()
    def switch_instance(self) -> None:
        """Go on through the other instance: it must see every write made through this one."""
        self.mem, self.other = self.other, self.mem

    @rule()
    def reopen(self) -> None:
        before = self.mem.read_scope()
        self.mem.close()
        self.mem = self.open()
        assert self.mem.read_scope() == before
        assert self.mem.log.verify() == self.mem.log.head()


SETTINGS = settings(max_examples=100, stateful_step_count=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
TestInMemory = MemoryMachine.TestCase
TestInMemory.settings = SETTINGS
TestSQLite = SQLiteMemoryMachine.TestCase
TestSQLite.settings = settings(SETTINGS, max_examples=40)


# --- the content check's fast walk agrees with its full walk ------------------------------------

_SCALARS = (st.none() | st.booleans() | st.binary(max_size=8) | st.text(max_size=8)
            | st.integers(min_value=-(1 << 70), max_value=1 << 70) | st.floats()
            | st.sampled_from(["\ud800", "caf\u00e9", 1 << 64, -(1 << 63) - 1, 2.0**1000 * 2]))
_KEYS = st.text(max_size=4) | st.integers() | st.sampled_from(["\udfff", b"k", True])
_CONTENT = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(_KEYS, inner, max_size=4) | st.tuples(inner, inner),
    max_leaves=20)


def _nested(depth: int) -> object:
    value: object = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@given(_CONTENT | st.integers(MAX_DEPTH - 2, MAX_DEPTH + 2).map(_nested)
       | st.sampled_from([set(), object(), bytearray(b"x")]))
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_the_fast_content_check_agrees_with_the_full_walk(content: object) -> None:
    """content_problem answers from a fast walk when it finds nothing; the full walk (which
    names where a problem is) must find nothing exactly then."""
    assert (content_problem(content) is None) == (_where_not_storable(content, "value") is None)
