"""The in-memory read model: dictionaries, one index per scope and per reader principal, and
the memberships, guarded by one lock."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from memswarm_es.errors import CheckpointConflictError, InvalidInputError, LogMismatchError
from memswarm_es.events import Event
from memswarm_es.namespaces import Namespace
from memswarm_es.principals import principals_of
from memswarm_es.scopes import SCOPE_NAMES, Scope

from .base import ReadModel, link_of
from .fold import (
    Change,
    MembershipChange,
    Memberships,
    MemoryEntry,
    apply_memberships,
    may_read,
)
from .frozen import frozen, is_frozen
from .key_index import KeyIndex

#: (scope part name, id): the key of one scope index.
IndexKey = tuple[str, str]


class InMemoryReadModel(ReadModel):
    """Entries by id; per scope part the entries inside it, by id; per reader principal the
    set of ids it may read; and the members of every group.

    Memories are created in log order and a memory's scope never changes, so each scope index
    keeps its entries in position order without sorting. An agent's read walks the smaller of
    its scope's index and its principals' sets, so it costs what its answer costs.

    Entries are handed out as they are, never copied: their content is frozen
    (:mod:`projections.frozen`) the first time a read meets them, not while projecting, so a
    replay does not pay for it. A scope index holding an entry not frozen yet is *dirty*: its
    next read freezes all its entries at once; a clean index is read as it stands.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._checkpoint = 0
        self._link: bytes | None = None  # the hash of the event at the checkpoint, if known
        self._entries: dict[str, MemoryEntry] = {}
        self._index: dict[str, dict[str, dict[str, MemoryEntry]]] = {n: {} for n in SCOPE_NAMES}
        self._dirty: set[IndexKey] = set()  # scope indexes holding entries not frozen yet
        self._readers: dict[str, dict[str, None]] = {}  # principal -> ids it may read
        self._members: Memberships = {}
        self._groups: Memberships = {}  # the same, by agent: agent -> group -> admin
        self._followed: str | None = None
        self._keyed = KeyIndex()

    def followed_log(self) -> str | None:
        return self._followed

    def in_process(self) -> bool:
        return True

    def checkpoint(self) -> int:
        return self._checkpoint

    def checkpoint_and_hash(self) -> tuple[int, bytes | None]:
        with self._lock:
            return self._checkpoint, self._link

    async def checkpoint_async(self) -> int:
        return self._checkpoint  # a field: no need for a worker thread

    def get_many(self, memory_ids: Iterable[str],
                 reader: str | None = None) -> dict[str, MemoryEntry]:
        with self._lock:
            principals = self._principals(reader)
            found = [e for m in memory_ids if (e := self._entries.get(m)) is not None
                     and may_read(e, principals)]
            return {e.memory_id: e for e in self._frozen(found)}

    def current(self, memory_ids: Iterable[str]) -> dict[str, MemoryEntry]:
        with self._lock:  # the projector folds against them: no need to freeze them
            return {m: e for m in memory_ids if (e := self._entries.get(m)) is not None}

    def members(self, group_id: str) -> dict[str, bool]:
        with self._lock:
            return dict(self._members.get(group_id, {}))

    def groups_of(self, agent_id: str) -> dict[str, bool]:
        with self._lock:
            return dict(self._groups.get(agent_id, {}))

    def _principals(self, reader: str | None) -> frozenset[str] | None:
        return None if reader is None else principals_of(reader, self._groups.get(reader, ()))

    def commit(self, changes: Sequence[Change], expected_checkpoint: int, checkpoint: int,
               events: Sequence[Event] = (),
               memberships: Sequence[MembershipChange] = ()) -> None:
        with self._lock:
            if self._checkpoint != expected_checkpoint:
                raise CheckpointConflictError(expected_checkpoint, self._checkpoint)
            if self.log_id is not None:
                if self._followed not in (None, self.log_id):
                    raise LogMismatchError(self.log_id, self._followed)
                self._followed = self.log_id
            entries, keyed = self._entries, self._keyed
            for memory_id, _, after in changes:
                if after is None:
                    self._remove(memory_id)
                    continue
                before = entries.get(memory_id)
                if before is None:  # new here (most changes): nothing of it to take out
                    keyed.add(after)
                    self._put(after, index_readers=True)
                    continue
                moved = before.agent_id != after.agent_id or before.group_id != after.group_id \
                    or before.context_id != after.context_id \
                    or _address(before) != _address(after)
                if moved:  # (a foreign log's second write of one id moves it)
                    self._remove(memory_id)
                    keyed.add(after)
                elif before.readable_by != after.readable_by:
                    self._unindex_readers(before)
                    self._index_readers(after)
                self._put(after, index_readers=moved)
            apply_memberships(self._members, memberships)
            apply_memberships(self._groups,  # the same changes, keyed the other way round
                              [MembershipChange(c.group_id, c.agent_id, c.admin)
                               for c in memberships])
            self._checkpoint = checkpoint
            self._link = link_of(events, checkpoint)

    def _put(self, entry: MemoryEntry, index_readers: bool = False) -> None:
        """Hold ``entry`` (new, or a new state of one held) in its scope indexes."""
        memory_id = entry.memory_id
        self._entries[memory_id] = entry
        dirty = None if is_frozen(entry) else self._dirty
        indexes = self._index
        for name, value in (("agent_id", entry.agent_id), ("group_id", entry.group_id),
                            ("context_id", entry.context_id)):
            if value is not None:
                index = indexes[name]
                held = index.get(value)
                if held is None:
                    held = index[value] = {}
                held[memory_id] = entry
                if dirty is not None:
                    dirty.add((name, value))
        if index_readers:
            readers = self._readers
            for principal in entry.readable_by:
                ids = readers.get(principal)
                if ids is None:
                    ids = readers[principal] = {}
                ids[memory_id] = None

    def _index_readers(self, entry: MemoryEntry) -> None:
        readers, memory_id = self._readers, entry.memory_id
        for principal in entry.readable_by:
            ids = readers.get(principal)
            if ids is None:
                ids = readers[principal] = {}
            ids[memory_id] = None

    def _unindex_readers(self, entry: MemoryEntry) -> None:
        for principal in entry.readable_by:
            ids = self._readers[principal]
            del ids[entry.memory_id]
            if not ids:
                del self._readers[principal]

    def _remove(self, memory_id: str) -> None:
        entry = self._entries.pop(memory_id, None)
        if entry is None:
            return
        for name, value in entry.scope.parts():
            ids = self._index[name][value]
            del ids[memory_id]
            if not ids:
                del self._index[name][value]
                self._dirty.discard((name, value))
        self._unindex_readers(entry)
        self._keyed.remove(entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            for index in self._index.values():
                index.clear()
            self._dirty.clear()
            self._readers.clear()
            self._members.clear()
            self._groups.clear()
            self._checkpoint = 0
            self._link = None
            self._followed = None
            self._keyed = KeyIndex()

    def staging(self) -> InMemoryReadModel:
        return InMemoryReadModel()

    def switch_to(self, staged: ReadModel, *, force: bool = False) -> bool:
        if not isinstance(staged, InMemoryReadModel) or staged is self:
            raise ValueError("switch_to takes a model made by this model's staging()")
        with self._lock, staged._lock:
            if not force:
                if self._followed not in (None, staged._followed) and staged._followed:
                    raise LogMismatchError(staged._followed, self._followed)
                if self._checkpoint > staged._checkpoint:
                    return False
            self._entries, self._index, self._dirty = (staged._entries, staged._index,
                                                       staged._dirty)
            self._readers, self._members, self._groups = (staged._readers, staged._members,
                                                          staged._groups)
            self._checkpoint, self._followed = staged._checkpoint, staged._followed
            self._link, staged._link = staged._link, None
            self._keyed, staged._keyed = staged._keyed, KeyIndex()
            staged._entries, staged._index, staged._dirty = ({}, {n: {} for n in SCOPE_NAMES},
                                                             set())
            staged._readers, staged._members, staged._groups = {}, {}, {}
            staged._checkpoint, staged._followed = 0, None
        self.changed.notify()
        return True

    def read_scope(self, scope: Scope, reader: str | None = None) -> list[MemoryEntry]:
        with self._lock:
            principals = self._principals(reader)
            keys = scope.parts()
            id_sets = [self._clean(key) for key in keys]
            readable = None if principals is None else \
                [self._readers[p] for p in principals if p in self._readers]
            if id_sets and (readable is None
                            or min(map(len, id_sets)) <= sum(map(len, readable))):
                # walk the scope's smallest index (in position order), probing the others
                smallest = min(id_sets, key=len)
                others = [s for s in id_sets if s is not smallest]
                if others:
                    found: Iterable[MemoryEntry] = [
                        e for m, e in smallest.items() if all(m in s for s in others)]
                else:
                    found = smallest.values()
                if principals is None:
                    return list(found)
                return [e for e in found if not principals.isdisjoint(e.readable_by)]
            if readable is None:
                entries = sorted(self._entries.values(), key=lambda e: e.position)
            else:  # walk what the reader may read: fewer than the scope holds
                ids = dict.fromkeys(m for s in readable for m in s)
                entries = sorted((self._entries[m] for m in ids
                                  if all(m in s for s in id_sets)), key=lambda e: e.position)
            return self._frozen(entries)

    # --- keys and namespaces ----------------------------------------------------------------

    def get_by_key(self, namespace: Namespace, key: str,
                   reader: str | None = None) -> MemoryEntry | None:
        with self._lock:
            holder = next(self._keyed.holders(namespace, key), None)
            if holder is None:
                return None
            entry = self._entries[holder]
            if not may_read(entry, self._principals(reader)):
                return None
            return entry if is_frozen(entry) else self._frozen([entry])[0]

    def read_namespace(self, scope: Scope, prefix: Namespace, reader: str | None = None,
                       first: int | None = None) -> list[MemoryEntry]:
        if not prefix:
            return self.read_scope(scope, reader)[:first]
        with self._lock:
            principals = self._principals(reader)
            entries = self._entries
            ids = self._keyed.ids_under(prefix, lambda m: entries[m].position)
            if scope.parts():
                found = (e for m in ids
                         if scope.matches((e := entries[m]).scope) and may_read(e, principals))
            elif principals is None:  # the operator, every scope: nothing to look at
                found = (entries[m] for m in ids)
            else:
                found = (e for m in ids if may_read(e := entries[m], principals))
            return self._frozen(list(itertools.islice(found, first)))

    def namespaces_held(self, prefix: Namespace, reader: str | None = None) -> set[Namespace]:
        with self._lock:
            principals = self._principals(reader)
            return {ns for ns in self._keyed.spaces(prefix)
                    if principals is None
                    or any(may_read(self._entries[m], principals) for m in self._keyed.ids(ns))}

    def _clean(self, key: IndexKey) -> dict[str, MemoryEntry]:
        """The scope index ``key`` (empty if there is none), every entry in it frozen."""
        name, value = key
        found = self._index[name].get(value)
        if found is None:
            return {}
        if key in self._dirty:
            self._frozen(list(found.values()))
            self._dirty.discard(key)
        return found

    def _frozen(self, found: list[MemoryEntry]) -> list[MemoryEntry]:
        """``found`` with every entry's content read-only: those not frozen yet are frozen and
        held so from now on (the lock is held)."""
        for i, e in enumerate(found):
            if not is_frozen(e):
                found[i] = e = frozen(e)
                self._put(e)
        return found


def _address(entry: MemoryEntry) -> tuple[Namespace, str | None]:
    return entry.namespace, entry.key


def open_url(url: str, **options: Any) -> InMemoryReadModel:
    """``memory://``: a new, empty in-memory read model (it takes no options)."""
    if url != "memory://":
        raise InvalidInputError(f"{url}: an in-memory read model is named memory://")
    return InMemoryReadModel(**options)
