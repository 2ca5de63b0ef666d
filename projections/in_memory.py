"""The in-memory read model: dictionaries, one index per scope and per reader principal, and
the memberships, guarded by one lock."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from memswarm_es.errors import CheckpointConflictError, InvalidInputError, LogMismatchError
from memswarm_es.events import Event, decode, encode
from memswarm_es.namespaces import Namespace
from memswarm_es.principals import principals_of
from memswarm_es.scopes import SCOPE_NAMES, Scope

from .base import ReadModel
from .fold import (
    Change,
    MembershipChange,
    Memberships,
    MemoryEntry,
    apply_memberships,
    may_read,
    with_content,
)
from .key_index import KeyIndex


class InMemoryReadModel(ReadModel):
    """Entries by id; per scope part an insertion-ordered set of ids; per reader principal
    the set of ids it may read; and the members of every group.

    Memories are created in log order and a memory's scope never changes, so each scope index
    keeps its ids in position order without sorting. An agent's read walks the smaller of its
    scope's index and its principals' sets, so it costs what its answer costs.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._checkpoint = 0
        self._entries: dict[str, MemoryEntry] = {}
        # Encoded (value, metadata) of entries holding mutable containers: each read decodes a
        # fresh copy, so callers can change what they get without touching the model.
        self._content: dict[str, bytes] = {}
        self._index: dict[str, dict[str, dict[str, None]]] = {n: {} for n in SCOPE_NAMES}
        self._readers: dict[str, dict[str, None]] = {}  # principal -> ids it may read
        self._members: Memberships = {}
        self._groups: Memberships = {}  # the same, by agent: agent -> group -> admin
        self._followed: str | None = None
        self._keyed = KeyIndex()

    def followed_log(self) -> str | None:
        return self._followed

    def checkpoint(self) -> int:
        return self._checkpoint

    async def checkpoint_async(self) -> int:
        return self._checkpoint  # a field: no need for a worker thread

    def get_many(self, memory_ids: Iterable[str],
                 reader: str | None = None) -> dict[str, MemoryEntry]:
        with self._lock:
            principals = self._principals(reader)
            found = (self._entries.get(m) for m in memory_ids)
            return {e.memory_id: self._detached(e) for e in found
                    if e is not None and may_read(e, principals)}

    def members(self, group_id: str) -> dict[str, bool]:
        with self._lock:
            return dict(self._members.get(group_id, {}))

    def groups_of(self, agent_id: str) -> dict[str, bool]:
        with self._lock:
            return dict(self._groups.get(agent_id, {}))

    def _principals(self, reader: str | None) -> frozenset[str] | None:
        return None if reader is None else principals_of(reader, self.groups_of(reader))

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
            for change in changes:
                if change.after is None:
                    self._remove(change.memory_id)
                else:
                    after = change.after
                    before = self._entries.get(change.memory_id)
                    if before is None or before.scope != after.scope \
                            or _address(before) != _address(after):  # (a foreign log's
                        self._remove(change.memory_id)  # second write of one id moves it)
                        self._add_to_index(after)
                    elif before.readable_by != after.readable_by:
                        self._unindex_readers(before)
                        self._index_readers(after)
                    self._entries[change.memory_id] = after
                    if after.metadata or isinstance(after.value, (list, dict)):
                        self._content[change.memory_id] = encode([after.value, after.metadata])
                    else:
                        self._content.pop(change.memory_id, None)
            apply_memberships(self._members, memberships)
            apply_memberships(self._groups,  # the same changes, keyed the other way round
                              [MembershipChange(c.group_id, c.agent_id, c.admin)
                               for c in memberships])
            self._checkpoint = checkpoint

    def _add_to_index(self, entry: MemoryEntry) -> None:
        for name, value in entry.scope.parts():
            self._index[name].setdefault(value, {})[entry.memory_id] = None
        self._index_readers(entry)
        self._keyed.add(entry)

    def _index_readers(self, entry: MemoryEntry) -> None:
        for principal in entry.readable_by:
            self._readers.setdefault(principal, {})[entry.memory_id] = None

    def _unindex_readers(self, entry: MemoryEntry) -> None:
        for principal in entry.readable_by:
            ids = self._readers[principal]
            del ids[entry.memory_id]
            if not ids:
                del self._readers[principal]

    def _remove(self, memory_id: str) -> None:
        entry = self._entries.pop(memory_id, None)
        self._content.pop(memory_id, None)
        if entry is None:
            return
        for name, value in entry.scope.parts():
            ids = self._index[name][value]
            del ids[memory_id]
            if not ids:
                del self._index[name][value]
        self._unindex_readers(entry)
        self._keyed.remove(entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._content.clear()
            for index in self._index.values():
                index.clear()
            self._readers.clear()
            self._members.clear()
            self._groups.clear()
            self._checkpoint = 0
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
            self._entries, self._content, self._index = (staged._entries, staged._content,
                                                         staged._index)
            self._readers, self._members, self._groups = (staged._readers, staged._members,
                                                          staged._groups)
            self._checkpoint, self._followed = staged._checkpoint, staged._followed
            self._keyed, staged._keyed = staged._keyed, KeyIndex()
            staged._entries, staged._content, staged._index = {}, {}, {n: {} for n in SCOPE_NAMES}
            staged._readers, staged._members, staged._groups = {}, {}, {}
            staged._checkpoint, staged._followed = 0, None
        self.changed.notify()
        return True

    def read_scope(self, scope: Scope, reader: str | None = None) -> list[MemoryEntry]:
        with self._lock:
            principals = self._principals(reader)
            id_sets = [self._index[name].get(value, {}) for name, value in scope.parts()]
            readable = None if principals is None else \
                [self._readers[p] for p in principals if p in self._readers]
            if id_sets and (readable is None
                            or min(map(len, id_sets)) <= sum(map(len, readable))):
                # walk the scope's smallest index (in position order), probing the others
                smallest = min(id_sets, key=len)
                others = [s for s in id_sets if s is not smallest]
                found = [e for m in smallest if all(m in s for s in others)
                         if may_read(e := self._entries[m], principals)]
            elif readable is None:
                found = sorted(self._entries.values(), key=lambda e: e.position)
            else:  # walk what the reader may read: fewer than the scope holds
                ids = dict.fromkeys(m for s in readable for m in s)
                found = sorted((self._entries[m] for m in ids if all(m in s for s in id_sets)),
                               key=lambda e: e.position)
            return [self._detached(e) for e in found]

    # --- keys and namespaces ----------------------------------------------------------------

    def get_by_key(self, namespace: Namespace, key: str,
                   reader: str | None = None) -> MemoryEntry | None:
        with self._lock:
            holder = next(self._keyed.holders(namespace, key), None)
            if holder is None:
                return None
            entry = self._entries[holder]
            return self._detached(entry) if may_read(entry, self._principals(reader)) else None

    def read_namespace(self, scope: Scope, prefix: Namespace,
                       reader: str | None = None) -> list[MemoryEntry]:
        if not prefix:
            return self.read_scope(scope, reader)
        with self._lock:
            principals = self._principals(reader)
            found = (self._entries[m] for m in
                     self._keyed.ids_under(prefix, lambda m: self._entries[m].position))
            return [self._detached(e) for e in found
                    if scope.matches(e.scope) and may_read(e, principals)]

    def namespaces_held(self, prefix: Namespace, reader: str | None = None) -> set[Namespace]:
        with self._lock:
            principals = self._principals(reader)
            return {ns for ns in self._keyed.spaces(prefix)
                    if principals is None
                    or any(may_read(self._entries[m], principals) for m in self._keyed.ids(ns))}

    def _detached(self, e: MemoryEntry) -> MemoryEntry:
        """A copy whose value and metadata a caller may change without touching the model."""
        content = self._content.get(e.memory_id)
        value, metadata = (e.value, {}) if content is None else decode(content)
        return with_content(e, value, metadata)


def _address(entry: MemoryEntry) -> tuple[Namespace, str | None]:
    return entry.namespace, entry.key


def open_url(url: str, **options: Any) -> InMemoryReadModel:
    """``memory://``: a new, empty in-memory read model (it takes no options)."""
    if url != "memory://":
        raise InvalidInputError(f"{url}: an in-memory read model is named memory://")
    return InMemoryReadModel(**options)
