"""Property: whatever agents and the operator do (writes with random permissions, updates,
deletes, forgets, permission changes, joins, leaves, admin grants), after every step every
path answers every agent exactly what a plain reference model of the rules allows, on the
in-memory, SQL view, Redis and Chroma read models; replay and reopen give the same answers.

The rules the reference model encodes (the README's table): a memory is readable by the
principals in its latest ``readable_by`` (``group:<g>`` meaning the members of ``g`` now) and
changeable by those in its ``writable_by``; by default its agent and its group's members read
it and its agent changes it; an agent writes only as itself and into groups it belongs to;
admins (and the operator) change memberships; anyone may leave by itself.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from memswarm_es import MemoryNotFoundError, Scope, SharedMemory
from memswarm_es.agent import AgentMemory
from memswarm_es.errors import PermissionDeniedError
from memswarm_es.log import SQLEventLog
from memswarm_es.memory import ChromaSharedMemory, SQLiteSharedMemory
from projections.base import SearchableReadModel
from projections.fold import fold
from projections.in_memory import InMemoryReadModel
from projections.redis import RedisReadModel

from .test_chroma import HashingEmbedder

AGENTS = ["a", "b", "c"]
GROUP_IDS = ["g1", "g2", "a"]  # "a" is an agent id too: group:a must never mean agent a
PRINCIPALS = ["*", *(f"agent:{a}" for a in AGENTS), *(f"group:{g}" for g in GROUP_IDS)]
WHO = st.sampled_from([None, *AGENTS])  # None: the operator
SOME_PRINCIPALS = st.none() | st.lists(st.sampled_from(PRINCIPALS), max_size=3)
SCOPES = [Scope(), Scope("a"), Scope("b"), Scope(group_id="g1"), Scope(group_id="a"),
          Scope(context_id="c1"), Scope("a", "g1"), Scope("b", "g2", "c1")]
URL: list[str] = []


@pytest.fixture(autouse=True)
def _redis(redis_url: str) -> Iterator[None]:
    URL[:] = [redis_url]
    yield


@dataclass
class Ref:
    """What the rules say of one memory."""

    scope: Scope
    readers: tuple[str, ...]
    writers: tuple[str, ...]
    position: int
    versions: int = 1  # memory events in the log
    live: bool = True


@dataclass
class Reference:
    """The rules, plainly: memories, memberships, and every event's position."""

    memories: dict[str, Ref] = field(default_factory=dict)
    members: dict[str, dict[str, bool]] = field(default_factory=dict)
    # position -> ("memory", memory id) or ("member", (agent, group))
    events: dict[int, tuple[str, object]] = field(default_factory=dict)

    def groups(self, agent: str) -> set[str]:
        return {g for g, members in self.members.items() if agent in members}

    def principals(self, agent: str) -> set[str]:
        return {"*", f"agent:{agent}", *(f"group:{g}" for g in self.groups(agent))}

    def may_read(self, who: str | None, memory_id: str) -> bool:
        ref = self.memories[memory_id]
        return who is None or bool(self.principals(who) & set(ref.readers))

    def may_write(self, who: str | None, memory_id: str) -> bool:
        ref = self.memories[memory_id]
        return who is None or bool(self.principals(who) & set(ref.writers))

    def is_admin(self, who: str | None, group: str) -> bool:
        return who is None or self.members.get(group, {}).get(who, False)

    def audit_positions(self, who: str | None) -> list[int]:
        out = []
        for position, (kind, what) in sorted(self.events.items()):
            if kind == "memory":
                assert isinstance(what, str)
                seen = self.may_read(who, what)
            else:
                agent, group = what  # type: ignore[misc]
                seen = who is None or agent == who or group in self.groups(who)
            if seen:
                out.append(position)
        return out


def defaults(scope: Scope) -> tuple[tuple[str, ...], tuple[str, ...]]:
    readers = [f"agent:{scope.agent_id}"] if scope.agent_id else []
    if scope.group_id:
        readers.append(f"group:{scope.group_id}")
    return tuple(sorted(readers)), ((f"agent:{scope.agent_id}",) if scope.agent_id else ())


def expect(error: type[Exception] | None) -> AbstractContextManager[object]:
    """``pytest.raises(error)``, or nothing to expect."""
    return nullcontext() if error is None else pytest.raises(error)


class AccessMachine(RuleBasedStateMachine):
    """Drives one shared memory and the reference side by side."""

    memories = Bundle("memories")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.name = uuid.uuid4().hex
        self.mem = self.open()
        self.ref = Reference()
        self.values = 0
        self.subscriptions = {who: self.mem.agent(who).subscribe(after=0) for who in AGENTS}

    # --- the memory under test ----------------------------------------------------------------

    def open(self) -> SharedMemory:
        return SharedMemory(SQLEventLog(f"sqlite:///{self.dir}/log.db", synchronous="OFF"),
                            InMemoryReadModel())

    def teardown(self) -> None:
        self.mem.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def actor(self, who: str | None) -> SharedMemory | AgentMemory:
        return self.mem if who is None else self.mem.agent(who)

    def appended(self, kind: str, what: object) -> None:
        self.ref.events[self.mem.log.head()] = (kind, what)

    # --- rules -----------------------------------------------------------------------------

    @rule(target=memories, who=WHO, owner=st.sampled_from([None, *AGENTS]),
          group=st.sampled_from([None, *GROUP_IDS]), context=st.sampled_from([None, "c1"]),
          readers=SOME_PRINCIPALS, writers=SOME_PRINCIPALS, in_metadata=st.booleans())
    def write(self, who: str | None, owner: str | None, group: str | None,
              context: str | None, readers: list[str] | None, writers: list[str] | None,
              in_metadata: bool) -> str | None:
        owner = owner if who is None else who
        scope = Scope(owner, group, context)
        metadata: dict[str, object] = {"group_id": group, "n": self.values}
        if who is None:
            metadata["agent_id"] = owner
        options: dict[str, object] = {}
        for name, given in (("readable_by", readers), ("writable_by", writers)):
            if given is not None:
                (metadata if in_metadata else options)[name] = given
        head = self.mem.log.head()
        denied = who is not None and group is not None and group not in self.ref.groups(who)
        with expect(PermissionDeniedError if denied else None):
            memory_id = self.actor(who).write_scope(f"v{self.values}", metadata, context,
                                                    **options)  # type: ignore[arg-type]
        self.values += 1
        if denied:
            assert self.mem.log.head() == head
            return None
        default_readers, default_writers = defaults(scope)
        self.ref.memories[memory_id] = Ref(
            scope, tuple(sorted(set(readers))) if readers is not None else default_readers,
            tuple(sorted(set(writers))) if writers is not None else default_writers,
            self.mem.log.head())
        self.appended("memory", memory_id)
        return memory_id

    def change_error(self, who: str | None, memory_id: str | None) -> type[Exception] | None:
        if memory_id is None:
            return None
        ref = self.ref.memories[memory_id]
        if not ref.live or not self.ref.may_read(who, memory_id):
            return MemoryNotFoundError
        if not self.ref.may_write(who, memory_id):
            return PermissionDeniedError
        return None

    @rule(who=WHO, memory_id=memories)
    def update(self, who: str | None, memory_id: str | None) -> None:
        if memory_id is None:
            return
        error = self.change_error(who, memory_id)
        head = self.mem.log.head()
        with expect(error):
            self.actor(who).update(memory_id, f"v{self.values}")
        self.values += 1
        self._changed(memory_id, error, head)

    @rule(who=WHO, memory_id=memories, readers=SOME_PRINCIPALS, writers=SOME_PRINCIPALS)
    def set_permissions(self, who: str | None, memory_id: str | None,
                        readers: list[str] | None, writers: list[str] | None) -> None:
        if memory_id is None or (readers is None and writers is None):
            return
        error = self.change_error(who, memory_id)
        head = self.mem.log.head()
        with expect(error):
            self.actor(who).set_permissions(memory_id, readable_by=readers, writable_by=writers)
        if self._changed(memory_id, error, head):
            ref = self.ref.memories[memory_id]
            if readers is not None:
                ref.readers = tuple(sorted(set(readers)))
            if writers is not None:
                ref.writers = tuple(sorted(set(writers)))

    @rule(who=WHO, memory_id=memories)
    def delete(self, who: str | None, memory_id: str | None) -> None:
        if memory_id is None:
            return
        error = self.change_error(who, memory_id)
        head = self.mem.log.head()
        with expect(error):
            self.actor(who).delete(memory_id)
        if self._changed(memory_id, error, head):
            self.ref.memories[memory_id].live = False

    @rule(who=WHO, memory_id=memories)
    def forget(self, who: str | None, memory_id: str | None) -> None:
        if memory_id is None:
            return
        error = None
        if not self.ref.may_read(who, memory_id):
            error = MemoryNotFoundError
        elif not self.ref.may_write(who, memory_id):
            error = PermissionDeniedError
        head = self.mem.log.head()
        with expect(error):
            self.actor(who).forget(memory_id, "asked to")
        if error is None and self.mem.log.head() > head:  # forgetting again appends nothing
            ref = self.ref.memories[memory_id]
            ref.live, ref.versions = False, ref.versions + 1
            self.appended("memory", memory_id)
        else:
            assert self.mem.log.head() == head

    def _changed(self, memory_id: str, error: type[Exception] | None, head: int) -> bool:
        if error is not None:
            assert self.mem.log.head() == head, "a refused change appended something"
            return False
        self.ref.memories[memory_id].versions += 1
        self.appended("memory", memory_id)
        return True

    @rule(by=WHO, agent=st.sampled_from(AGENTS), group=st.sampled_from(GROUP_IDS),
          admin=st.booleans())
    def join(self, by: str | None, agent: str, group: str, admin: bool) -> None:
        allowed = self.ref.is_admin(by, group)
        with expect(None if allowed else PermissionDeniedError):
            if by is None:
                self.mem.join_group(agent, group, admin)
            else:
                self.mem.agent(by).join_group(agent, group, admin)
        if allowed:
            self.ref.members.setdefault(group, {})[agent] = admin
            self.appended("member", (agent, group))

    @rule(by=WHO, agent=st.sampled_from(AGENTS), group=st.sampled_from(GROUP_IDS))
    def leave(self, by: str | None, agent: str, group: str) -> None:
        allowed = by == agent or self.ref.is_admin(by, group)
        with expect(None if allowed else PermissionDeniedError):
            if by is None:
                self.mem.leave_group(agent, group)
            else:
                self.mem.agent(by).leave_group(agent, group)
        if allowed:
            self.ref.members.get(group, {}).pop(agent, None)
            if not self.ref.members.get(group, True):
                del self.ref.members[group]
            self.appended("member", (agent, group))

    @rule()
    def replay(self) -> None:
        self.mem.replay()

    @rule()
    def reopen(self) -> None:
        self.mem.close()
        self.mem = self.open()
        head = self.mem.log.head()
        self.subscriptions = {who: self.mem.agent(who).subscribe(after=head) for who in AGENTS}

    # --- what every agent sees, on every path -------------------------------------------------

    def readable_live(self, who: str | None, scope: Scope) -> list[str]:
        found = [(ref.position, m) for m, ref in self.ref.memories.items()
                 if ref.live and scope.matches(ref.scope) and self.ref.may_read(who, m)]
        return [m for _, m in sorted(found)]

    @invariant()
    def reads_hold_exactly_what_the_rules_allow(self) -> None:
        for who in [None, *AGENTS]:
            reader = self.actor(who)
            for scope in SCOPES:
                got = reader.read_scope(scope.agent_id, scope.group_id, scope.context_id)
                assert [e.memory_id for e in got] == self.readable_live(who, scope), (who, scope)
                for entry in got:
                    ref = self.ref.memories[entry.memory_id]
                    assert (entry.readable_by, entry.writable_by) == (ref.readers, ref.writers)
            for memory_id, ref in self.ref.memories.items():
                if ref.live and self.ref.may_read(who, memory_id):
                    assert reader.get(memory_id).memory_id == memory_id
                else:
                    with pytest.raises(MemoryNotFoundError):
                        reader.get(memory_id)

    @invariant()
    def history_audit_and_the_past_hold_what_the_rules_allow(self) -> None:
        head = self.mem.log.head()
        past_at = head // 2
        past = fold(self.mem.log.read(0, past_at)).entries
        for who in [None, *AGENTS]:
            reader = self.actor(who)
            for memory_id, ref in self.ref.memories.items():
                if self.ref.may_read(who, memory_id):
                    assert len(reader.history(memory_id)) == ref.versions
                else:
                    with pytest.raises(MemoryNotFoundError):
                        reader.history(memory_id)
            shown, after = [], 0
            while True:  # small pages: the filtering must page correctly
                page = reader.audit(after=after, limit=3)
                shown += [e.position for e in page.events]
                if page.next_after is None:
                    break
                after = page.next_after
            assert shown == self.ref.audit_positions(who), who
            then = reader.as_of(past_at).read_scope()
            assert [e.memory_id for e in then] == sorted(
                (m for m in past if self.ref.may_read(who, m)), key=lambda m: past[m].position)
            for group in GROUP_IDS:
                if who is None or group in self.ref.groups(who):
                    assert reader.members(group) == self.ref.members.get(group, {})
                else:
                    with pytest.raises(PermissionDeniedError):
                        reader.members(group)

    @invariant()
    def subscribers_hear_only_what_they_may_read(self) -> None:
        self.mem.sync()
        for who, subscription in self.subscriptions.items():
            start = subscription.position
            heard = [v.position for v in subscription.poll(0)]
            expected = [p for p, (kind, what) in sorted(self.ref.events.items())
                        if start < p and kind == "memory" and isinstance(what, str)
                        and self.ref.may_read(who, what)]
            assert heard == expected, who

    @invariant()
    def search_finds_the_true_top_k_among_what_the_agent_may_read(self) -> None:
        model = self.mem.read_model
        if not isinstance(model, SearchableReadModel):
            return
        everything = self.mem.search("v1 v2 v3", k=1000)
        for who in AGENTS:
            allowed = [round(h.distance, 5) for h in everything
                       if self.ref.may_read(who, h.entry.memory_id)][:3]
            hits = self.mem.agent(who).search("v1 v2 v3", k=3)
            assert all(self.ref.may_read(who, h.entry.memory_id) for h in hits)
            assert [round(h.distance, 5) for h in hits] == allowed, who


class SQLViewAccessMachine(AccessMachine):
    """The same rules on the SQL view kept in the SQLite log's own file."""

    def open(self) -> SharedMemory:
        return SQLiteSharedMemory(f"{self.dir}/log.db", synchronous="OFF")


class RedisAccessMachine(AccessMachine):
    """The same rules on a Redis view of a SQLite log."""

    def open(self) -> SharedMemory:
        return SharedMemory(SQLEventLog(f"sqlite:///{self.dir}/log.db", synchronous="OFF"),
                            RedisReadModel(URL[0], prefix=f"memswarm-access-{self.name}"))

    def teardown(self) -> None:
        self.mem.read_model.drop()
        super().teardown()


class ChromaAccessMachine(AccessMachine):
    """The same rules on a Chroma view of a SQLite log (search included)."""

    def open(self) -> SharedMemory:
        return ChromaSharedMemory(f"{self.dir}/chroma", embedding_function=HashingEmbedder(),
                                  log=f"sqlite:///{self.dir}/log.db")


# Bounded so that the whole suite stays within CI's budget; every run draws new histories.
SETTINGS = settings(max_examples=25, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
TestAccessInMemory = AccessMachine.TestCase
TestAccessInMemory.settings = SETTINGS
TestAccessSQLView = SQLViewAccessMachine.TestCase
TestAccessSQLView.settings = settings(SETTINGS, max_examples=15)
TestAccessRedis = RedisAccessMachine.TestCase
TestAccessRedis.settings = settings(SETTINGS, max_examples=15)
TestAccessChroma = ChromaAccessMachine.TestCase
TestAccessChroma.settings = settings(SETTINGS, max_examples=6, stateful_step_count=15)
