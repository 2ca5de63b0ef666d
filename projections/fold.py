"""The pure fold of events into memories: shared by every read model, replay and time travel.

No I/O here. ``evolve`` turns one memory's previous state and one event into its next state;
``changes`` folds a batch into the net change per memory (``membership_changes`` into the net
change per group member); ``fold`` builds a whole view; ``select`` answers a scoped read from a
view, for the operator or for one agent. Every read model computes with these, so every backend
sees the same memories, permissions and memberships by construction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from memswarm_es.events import (
    ENDING_EVENT_TYPES,
    MEMBERSHIP_EVENT_TYPES,
    Event,
    EventType,
    from_micros,
)
from memswarm_es.namespaces import stored_key, stored_namespace
from memswarm_es.principals import (
    allows,
    default_readers,
    default_writers,
    principals_of,
    stored_principals,
)
from memswarm_es.scopes import Scope


class MemoryEntry(NamedTuple):
    """One live memory as a read model holds it: an immutable value, built at C speed (a
    tuple of its fields; entries are made for every event folded and every row read).

    ``position`` is where the memory was first written (reads are ordered by it);
    ``last_position`` is where its current version was recorded. ``damaged`` is ``None``, or
    why the event behind the current version could not be read (its value is then ``None``).
    ``readable_by`` and ``writable_by`` are the principals allowed (see
    :mod:`memswarm_es.principals`), the defaults spelled out. ``key`` and ``namespace`` are
    the caller's address of the memory, if it gave one (see :mod:`memswarm_es.namespaces`).
    ``embedding`` is the vector its write or update carried (``write_scope(...,
    embedding=...)``), kept until an update changes the value without a new one.
    """

    memory_id: str
    value: Any
    metadata: dict[str, Any]
    agent_id: str | None
    group_id: str | None
    context_id: str | None
    version: int
    position: int
    last_position: int
    created_at_us: int
    updated_at_us: int
    created_by: str
    updated_by: str
    damaged: str | None = None
    readable_by: tuple[str, ...] = ()
    writable_by: tuple[str, ...] = ()
    key: str | None = None
    namespace: tuple[str, ...] = ()
    embedding: tuple[float, ...] | None = None

    @property
    def scope(self) -> Scope:
        # Not checked again: an entry may come from a log written when ids could hold what
        # they no longer may, and it must still read.
        return Scope.stored(self.agent_id, self.group_id, self.context_id)

    @property
    def created_at(self) -> datetime:
        return from_micros(self.created_at_us)

    @property
    def updated_at(self) -> datetime:
        return from_micros(self.updated_at_us)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (``id`` is the memory id), e.g. for JSON; without the vector."""
        out = self._asdict()
        del out["embedding"]
        out["id"] = out.pop("memory_id")
        out["created_at"] = self.created_at.isoformat()
        out["updated_at"] = self.updated_at.isoformat()
        return out

    def __getitem__(self, key: Any) -> Any:
        """Mapping-style access (``entry["value"]``), as the seed's dict entries allowed."""
        if type(key) is not str:
            return tuple.__getitem__(self, key)
        if key == "id":
            return self.memory_id
        if key in _ENTRY_FIELD_SET:
            return getattr(self, key)
        raise KeyError(key)


ENTRY_FIELDS: tuple[str, ...] = MemoryEntry._fields
_ENTRY_FIELD_SET = frozenset(ENTRY_FIELDS)
_REQUIRED_FIELDS = len(ENTRY_FIELDS) - len(MemoryEntry._field_defaults)
_PERMISSIONS_AT = ENTRY_FIELDS.index("writable_by")
_NAMESPACE_AT = ENTRY_FIELDS.index("namespace")
_EMBEDDING_AT = ENTRY_FIELDS.index("embedding")
_new_entry = tuple.__new__


def entry_row(entry: MemoryEntry) -> tuple[Any, ...]:
    """An entry as a plain tuple, field by field: the one storage codec of every read model
    (msgpack writes it as an array)."""
    return tuple(entry)


def with_content(entry: MemoryEntry, value: Any, metadata: dict[str, Any]) -> MemoryEntry:
    """``entry`` holding ``value`` and ``metadata`` instead (a detached copy for a reader)."""
    return _new_entry(MemoryEntry, (entry[0], value, metadata, *entry[3:]))


def entry_from_row(row: Sequence[Any]) -> MemoryEntry:
    """Inverse of :func:`entry_row`; rows written before optional fields were added still load
    (a row without permissions gets the default ones, one without a vector none). Raises
    ``ValueError`` for a row of another shape."""
    if not _REQUIRED_FIELDS <= len(row) <= len(ENTRY_FIELDS):
        raise ValueError(f"an entry row has {len(row)} fields, not {len(ENTRY_FIELDS)}")
    if len(row) > _PERMISSIONS_AT:
        fields = list(row)  # stored as lists: back to tuples, and unreadable ones allow nobody
        fields[_PERMISSIONS_AT - 1] = stored_principals(fields[_PERMISSIONS_AT - 1]) or ()
        fields[_PERMISSIONS_AT] = stored_principals(fields[_PERMISSIONS_AT]) or ()
        if len(fields) > _NAMESPACE_AT:
            fields[_NAMESPACE_AT] = stored_namespace(fields[_NAMESPACE_AT])
        if len(fields) > _EMBEDDING_AT and fields[_EMBEDDING_AT] is not None:
            fields[_EMBEDDING_AT] = tuple(fields[_EMBEDDING_AT])  # stored as checked
        if len(fields) == len(ENTRY_FIELDS):
            return _new_entry(MemoryEntry, fields)
        return MemoryEntry(*fields)
    entry = MemoryEntry(*row)
    return with_permissions(entry, default_readers(entry.agent_id, entry.group_id),
                            default_writers(entry.agent_id))


def with_permissions(entry: MemoryEntry, readable_by: tuple[str, ...],
                     writable_by: tuple[str, ...]) -> MemoryEntry:
    """``entry`` with other permissions."""
    return entry._replace(readable_by=readable_by, writable_by=writable_by)


class Change(NamedTuple):
    """The net effect of a batch on one memory: ``after is None`` means it is gone. An
    immutable value built at C speed (a fold makes one per memory a batch touches)."""

    memory_id: str
    before: MemoryEntry | None
    after: MemoryEntry | None


def evolve(entry: MemoryEntry | None, event: Event) -> MemoryEntry | None:
    """The state of one memory after ``event`` (events of other memories must not be passed).

    Total: no event stops a fold. A version whose payload was redacted (forgotten) reads as
    value ``None``, no metadata; one whose payload cannot be read as content (damaged, or
    written by another program) reads the same way with ``damaged`` saying why. The payload
    is decoded once, and the one new entry is built field by field.
    """
    kind = event.type
    if kind == _WRITTEN:
        data, problem = event.content()
        scope = event.scope
        agent_id, group_id = scope.agent_id, scope.group_id
        if data:
            if "readable_by" in data or "writable_by" in data:
                readers, writers = _permissions(None, event, data)
            else:  # (what _permissions answers then, without its call)
                readers, writers = _defaults(agent_id, group_id)
            content: Mapping[str, Any] = data
            key = content.get("key")
            if key is not None:
                key = stored_key(key)
            namespace = content.get("namespace")
            namespace = () if namespace is None else stored_namespace(namespace)
        else:
            readers, writers = _permissions(None, event, data)
            content, key, namespace = _NO_CONTENT, None, ()
        at = event.recorded_at_us
        position = event.position
        return _new_entry(MemoryEntry, (
            event.memory_id or "", content.get("value"), content.get("metadata") or {},
            agent_id, group_id, scope.context_id, event.version or 1,
            position, position, at, at, event.actor, event.actor, problem,
            readers, writers, key, namespace, stored_vector(content.get("embedding"))))
    if entry is None:
        return None
    if kind == _UPDATED:
        data, problem = event.content()
        readers, writers = _permissions((entry.readable_by, entry.writable_by), event, data)
        if event.payload is None or problem:
            changed: Mapping[str, Any] = {"value": None, "metadata": {}}
        else:
            changed = data or _NO_CONTENT
        return _new_entry(MemoryEntry, (
            entry.memory_id, changed.get("value", entry.value),
            changed.get("metadata", entry.metadata), entry.agent_id, entry.group_id,
            entry.context_id, event.version or entry.version + 1, entry.position,
            event.position, entry.created_at_us, event.recorded_at_us, entry.created_by,
            event.actor, problem or (entry.damaged if "value" not in changed else None),
            readers, writers, entry.key, entry.namespace, _vector_after(entry, changed)))
    if kind in ENDING_EVENT_TYPES:
        return None
    return entry


def stored_vector(vector: Any) -> tuple[float, ...] | None:
    """A vector as an entry keeps it: a non-empty sequence of finite numbers as floats, or
    ``None`` for anything else (a foreign payload's, say: it stops no fold)."""
    if not isinstance(vector, (list, tuple)) or not vector:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
               for x in vector):
        return None
    return tuple(float(x) for x in vector)


def _vector_after(entry: MemoryEntry, changed: Mapping[str, Any]) -> tuple[float, ...] | None:
    """The vector after an update: the one it carries; else none if it changes the value (the
    old vector described the old value); else the one before."""
    if "embedding" in changed:
        return stored_vector(changed["embedding"])
    return None if "value" in changed else entry.embedding


_WRITTEN = EventType.MEMORY_WRITTEN
_UPDATED = EventType.MEMORY_UPDATED
_NO_CONTENT: Mapping[str, Any] = {}

Permissions = tuple[tuple[str, ...], tuple[str, ...]]


def permissions_after(before: Permissions | None, event: Event) -> Permissions:
    """Who may read and who may change a memory after ``event`` (one of its events; ``before``
    is what held before it, ``None`` before its write).

    A write starts from the defaults of its scope; any event may set either list
    (``readable_by``, ``writable_by`` in its payload; a forget records the last ones, since it
    erases the payloads before it). A list that cannot be read as principals fails closed: it
    allows no agent.
    """
    return _permissions(before, event, event.content()[0])


def _permissions(before: Permissions | None, event: Event,
                 data: Mapping[str, Any] | None) -> Permissions:
    """:func:`permissions_after`, given the event's content as ``event.content()`` read it."""
    if before is None or event.type == _WRITTEN:
        scope = event.scope
        before = _defaults(scope.agent_id, scope.group_id)
    if not data:
        if event.payload is not None and data is None:  # unreadable: fail closed
            return (), ()
        return before
    readers, writers = before
    if "readable_by" in data:
        readers = stored_principals(data["readable_by"]) or ()
    if "writable_by" in data:
        writers = stored_principals(data["writable_by"]) or ()
    return readers, writers


@functools.lru_cache(maxsize=4096)
def _defaults(agent_id: str | None, group_id: str | None) -> Permissions:
    """The permissions a write into this scope starts from (shared: tuples do not change)."""
    return default_readers(agent_id, group_id), default_writers(agent_id)


def last_permissions(events: Iterable[Event]) -> Permissions | None:
    """The permissions of a memory as its latest event left them (deleted and forgotten
    memories included), from its events in log order; ``None`` if it has none."""
    found: Permissions | None = None
    for event in events:
        if event.memory_id is not None:
            found = permissions_after(found, event)
    return found


def changes(prior: Mapping[str, MemoryEntry], events: Iterable[Event]) -> list[Change]:
    """Fold ``events`` over the ``prior`` entries of the memories they touch; net change each."""
    before: dict[str, MemoryEntry | None] = {}
    after: dict[str, MemoryEntry | None] = {}
    missing = _MISSING
    get = prior.get
    for event in events:
        memory_id = event.memory_id
        if memory_id is None:
            continue
        held = after.get(memory_id, missing)
        if held is missing:
            held = before[memory_id] = get(memory_id)
        after[memory_id] = evolve(held, event)
    return [_new_change(Change, (m, b, a)) for m, a in after.items()
            if (b := before[m]) is not a and b != a]


_MISSING: Any = object()
_new_change = tuple.__new__


# --- memberships ---------------------------------------------------------------------------------

#: Group id -> member agent id -> whether that member is an admin of the group.
Memberships = dict[str, dict[str, bool]]


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """The net effect of a batch on one agent's membership of one group: ``admin`` is ``None``
    when it is no member after the batch."""

    agent_id: str
    group_id: str
    admin: bool | None


def membership_of(event: Event) -> MembershipChange | None:
    """What a membership event says (``None`` for any other event). An admin flag that cannot
    be read as ``True`` grants nothing."""
    if event.type not in MEMBERSHIP_EVENT_TYPES:
        return None
    agent_id, group_id = event.scope.agent_id, event.scope.group_id
    if not isinstance(agent_id, str) or not isinstance(group_id, str):
        return None  # a foreign event that names nobody: it changes nobody
    if event.type == EventType.GROUP_LEFT:
        return MembershipChange(agent_id, group_id, None)
    data, _ = event.content()
    return MembershipChange(agent_id, group_id, (data or {}).get("admin") is True)


def membership_changes(events: Iterable[Event]) -> list[MembershipChange]:
    """The net membership change per (agent, group) that ``events`` make, in first-touched
    order."""
    net: dict[tuple[str, str], MembershipChange] = {}
    for event in events:
        if event.type in MEMBERSHIP_EVENT_TYPES:  # (most events are not: no call for them)
            change = membership_of(event)
            if change is not None:
                net[change.agent_id, change.group_id] = change
    return list(net.values())


def apply_memberships(members: Memberships, batch: Iterable[MembershipChange]) -> None:
    """Apply membership changes to ``members`` in place."""
    for change in batch:
        group = members.setdefault(change.group_id, {})
        if change.admin is None:
            group.pop(change.agent_id, None)
            if not group:
                del members[change.group_id]
        else:
            group[change.agent_id] = change.admin


def groups_of(members: Memberships, agent_id: str) -> dict[str, bool]:
    """The groups ``agent_id`` belongs to, each with whether it is an admin there."""
    return {g: agents[agent_id] for g, agents in members.items() if agent_id in agents}


# --- whole views ---------------------------------------------------------------------------------


@dataclass
class View:
    """Live memories keyed by id and the memberships of every group, plus the position they
    were folded up to."""

    entries: dict[str, MemoryEntry] = field(default_factory=dict)
    position: int = 0
    members: Memberships = field(default_factory=dict)


def fold(events: Iterable[Event], view: View | None = None) -> View:
    """A new view: ``view`` (empty by default) with ``events`` applied; ``view`` is not changed."""
    if view is None:
        return fold_into(View(), events)
    members = {g: dict(agents) for g, agents in view.members.items()}
    return fold_into(View(dict(view.entries), view.position, members), events)


def fold_into(view: View, events: Iterable[Event]) -> View:
    """Apply ``events`` to ``view`` in place and return it (for long folds: no copying)."""
    entries = view.entries
    for event in events:
        if event.memory_id is not None:
            entry = evolve(entries.get(event.memory_id), event)
            if entry is None:
                entries.pop(event.memory_id, None)
            else:
                entries[event.memory_id] = entry
        elif event.type in MEMBERSHIP_EVENT_TYPES:
            change = membership_of(event)
            if change is not None:
                apply_memberships(view.members, [change])
        view.position = event.position
    return view


def may_read(entry: MemoryEntry, principals: frozenset[str] | None) -> bool:
    """True if an agent named by ``principals`` may read ``entry`` (``None``: the operator)."""
    return principals is None or allows(entry.readable_by, principals)


def reader_principals(members: Memberships, reader: str | None) -> frozenset[str] | None:
    """The principals of agent ``reader`` under ``members`` (``None`` for the operator)."""
    return None if reader is None else principals_of(reader, groups_of(members, reader))


def select(entries: Iterable[MemoryEntry], scope: Scope,
           principals: frozenset[str] | None = None) -> list[MemoryEntry]:
    """The entries inside ``scope`` (AND of the parts set) that an agent named by
    ``principals`` may read (all of them for ``None``, the operator), ordered by position."""
    return sorted((e for e in entries if scope.matches(e.scope) and may_read(e, principals)),
                  key=lambda e: e.position)
