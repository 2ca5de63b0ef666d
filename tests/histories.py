"""Memory histories made in bulk (writes, updates and deletes over many scopes, permissions
set and changed, agents joining and leaving groups), appended to a log in large batches, and
the comparisons the projection tests make."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from memswarm_es.events import Event, EventType, NewEvent, new_id
from memswarm_es.log.base import EventLog
from memswarm_es.log.sql import SQLEventLog
from memswarm_es.scopes import Scope
from projections.base import ReadModel
from projections.fold import fold, reader_principals, select
from projections.keys import NamespaceQuery, Query, key_holder, namespaces_of, select_query

AGENTS = ["a", "b", "a:b", "ä", "%"]
GROUPS = [None, "g1", "g2"]
CONTEXTS = [None, "c1", "c2"]
# Group ids that are also agent ids: a principal must never read as the other kind.
MEMBER_GROUPS = ["g1", "g2", "a", "a:b"]
NAMESPACES = [("a",), ("a", "b"), ("a", "b", "c"), ("a", "c"), ("b",), ("a:b", "%"), ("ab",)]
KEYS = ["k1", "k2", "k.3"]
PRINCIPALS = ["*", *(f"agent:{a}" for a in AGENTS), *(f"group:{g}" for g in MEMBER_GROUPS)]


def _principals(rng: random.Random) -> list[str]:
    return rng.sample(PRINCIPALS, rng.randint(0, 3))


def memory_events(count: int, seed: int = 0) -> Iterator[NewEvent]:
    """``count`` events: mostly writes (some with permissions of their own), some updates
    (some changing permissions), deletes, and agents joining and leaving groups."""
    rng = random.Random(seed)
    live: dict[str, tuple[Scope, int]] = {}
    for i in range(count):
        roll = rng.random()
        if roll > 0.9:
            agent, group = rng.choice(AGENTS), rng.choice(MEMBER_GROUPS)
            if rng.random() < 0.3:
                yield NewEvent.create(EventType.GROUP_LEFT, Scope(agent, group), "operator", {})
            else:
                yield NewEvent.create(EventType.GROUP_JOINED, Scope(agent, group), "operator",
                                      {"admin": rng.random() < 0.3})
        elif live and roll < 0.1:
            memory_id = rng.choice(list(live))
            scope, version = live[memory_id]
            live[memory_id] = (scope, version + 1)
            yield NewEvent.create(EventType.MEMORY_UPDATED, scope, "operator",
                                  {"readable_by": _principals(rng),
                                   "writable_by": _principals(rng)},
                                  memory_id=memory_id, version=version + 1)
        elif live and roll < 0.25:
            memory_id = rng.choice(list(live))
            scope, version = live[memory_id]
            live[memory_id] = (scope, version + 1)
            yield NewEvent.create(EventType.MEMORY_UPDATED, scope, scope.agent_id or "x",
                                  {"value": f"v{i}"}, memory_id=memory_id, version=version + 1)
        elif live and roll < 0.35:
            memory_id = rng.choice(list(live))
            scope, version = live.pop(memory_id)
            yield NewEvent.create(EventType.MEMORY_DELETED, scope, scope.agent_id or "x", {},
                                  memory_id=memory_id, version=version + 1)
        else:
            scope = Scope(rng.choice(AGENTS), rng.choice(GROUPS), rng.choice(CONTEXTS))
            memory_id = new_id()
            live[memory_id] = (scope, 1)
            data: dict[str, object] = {"value": {"n": i % 7, "i": i}, "metadata": {"n": i}}
            if rng.random() < 0.3:
                data["readable_by"] = _principals(rng)
            if rng.random() < 0.6:
                data["namespace"] = list(rng.choice(NAMESPACES))
                if rng.random() < 0.7:  # a random id, as another program might write: keys
                    data["key"] = rng.choice(KEYS)  # may then repeat among live memories
            yield NewEvent.create(EventType.MEMORY_WRITTEN, scope, scope.agent_id or "x",
                                  data, memory_id=memory_id, version=1, event_id=memory_id)


def fill(log: EventLog, count: int, seed: int = 0, batch: int = 1000) -> None:
    """Append ``count`` memory events to ``log`` in batches."""
    events = list(memory_events(count, seed))
    for start in range(0, len(events), batch):
        log.append(events[start:start + batch])


def query_scopes() -> list[Scope]:
    """Every combination of the scope parts used above, the empty scope included."""
    return [Scope(a, g, c) for a in [None, *AGENTS] for g in GROUPS for c in CONTEXTS]


def assert_is_fold(model: ReadModel, log: EventLog, upto: int | None = None) -> None:
    """``model`` holds exactly the fold of the log up to ``upto`` (default: its checkpoint),
    for every scope combination, read by the operator and by every agent; and the same
    memberships."""
    upto = model.checkpoint() if upto is None else upto
    assert model.checkpoint() == upto
    view = fold(log.read(0, upto))
    ids = [*view.entries, "nothing"]
    for reader in [None, *AGENTS]:
        principals = reader_principals(view.members, reader)
        for scope in query_scopes():
            assert model.read_scope(scope, reader) == select(view.entries.values(), scope,
                                                             principals), (scope, reader)
        allowed = {e.memory_id: e for e in select(view.entries.values(), Scope(), principals)}
        assert model.get_many(ids, reader) == allowed, reader
    for group in MEMBER_GROUPS:
        assert model.members(group) == view.members.get(group, {}), group
    for agent in AGENTS:
        assert model.groups_of(agent) == {g: m[agent] for g, m in view.members.items()
                                          if agent in m}, agent


def queries() -> list[Query]:
    """Queries of every kind: prefixes, filters, both orders, pages."""
    prefixes: list[tuple[str, ...]] = [(), ("a",), ("a", "b"), ("b",), ("a:b",), ("nothing",)]
    filters = [{}, {"n": 3}, {"n": {"$gte": 2, "$lt": 5}}, {"n": {"$ne": 1}}, {"i": {"$gt": 40}}]
    return [Query.checked(p, f or None, o, limit, offset)
            for p in prefixes for f in filters for o in (None, "updated_at")
            for limit, offset in ((None, 0), (3, 2))]


NAMESPACE_QUERIES = [
    NamespaceQuery.checked(prefix, suffix, depth, limit, offset)
    for prefix in (None, ("a",), ("a", "*"), ("*", "b"))
    for suffix in (None, ("c",), ("*",))
    for depth in (None, 1, 2)
    for limit, offset in ((100, 0), (2, 1))
]


def assert_keys_are_fold(model: ReadModel, log: EventLog) -> None:
    """``model`` answers every key, namespace query and namespaces listing as the fold of the
    log does, for the operator and for every agent."""
    view = fold(log.read(0, model.checkpoint()))
    entries = view.entries.values()
    for reader in [None, *AGENTS]:
        principals = reader_principals(view.members, reader)
        for namespace in NAMESPACES:
            for key in KEYS:
                holder = key_holder(entries, namespace, key)
                expected = holder if holder is not None and (
                    principals is None or holder in select([holder], Scope(), principals)
                ) else None
                assert model.get_by_key(namespace, key, reader) == expected, (namespace, key)
        for scope in (Scope(), Scope(agent_id="a"), Scope(group_id="g1")):
            for query in queries():
                assert model.query(scope, query, reader) == select_query(
                    entries, scope, query, principals), (scope, query, reader)
        for listing in NAMESPACE_QUERIES:
            assert model.list_namespaces(listing, reader) == namespaces_of(
                entries, listing, principals), (listing, reader)


def count_log_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on (for the test), the ``after`` of every ``SQLEventLog.read``: the reads of
    the log a projector makes, where a view should read inside its own transactions."""
    reads: list[int] = []
    real_read = SQLEventLog.read

    def counted(self: SQLEventLog, after: int = 0, limit: int | None = None) -> list[Event]:
        reads.append(after)
        return real_read(self, after, limit)

    monkeypatch.setattr(SQLEventLog, "read", counted)
    return reads


def copy_database(source: Path | str, target: Path | str) -> None:
    """Make ``target`` hold what the SQLite file ``source`` holds, with SQLite's backup API,
    while other connections keep either open (as ``sqlite3 TARGET ".restore SOURCE"`` puts a
    log back from a copy under running processes)."""
    with sqlite3.connect(source) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy)
