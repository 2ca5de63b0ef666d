"""Changes applied together: :meth:`SharedMemory.apply` records a list of them as one atomic
append, every one checked first, all or nothing.

A change is a :class:`Write` (a new memory; with a ``key``, an upsert), a :class:`Put` (an
upsert by namespace and key), an :class:`Update` or a :class:`Delete` (by memory id, or by
namespace and key). Each is decided against the memory's state in the log and the changes
before it in the batch (a put after a put of the same key updates what the first wrote), and
the batch is decided again if another writer moved a memory it touches meanwhile.

A key names at most one live memory in its namespace, swarm-wide. The memories a key names
over time have derived ids (:func:`~memswarm_es.namespaces.keyed_memory_id`), so two writers
creating one key race for one id, and the loser updates what the winner wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from projections.fold import MemoryEntry, evolve, stored_vector

from .errors import (
    ConflictError,
    InvalidInputError,
    MemoryNotFoundError,
    PermissionDeniedError,
    VersionConflictError,
)
from .events import GENESIS_HASH, EventType, NewEvent, encode_content, new_id, seal
from .log.base import EventFilter, backoff
from .namespaces import Namespace, check_key, check_namespace, keyed_memory_id
from .principals import allows
from .scopes import check_id

if TYPE_CHECKING:
    from .access import Gate
    from .memory import SharedMemory

RETRIES = 50
#: The default of ``update(value=...)``: no new value (``None`` is a value).
UNSET: Any = object()


@dataclass(frozen=True)
class Write:
    """A new memory (see :meth:`SharedMemory.write_scope`); with ``key``, an upsert."""

    value: Any
    metadata: Mapping[str, Any] | None = None
    context_id: str | None = None
    key: str | None = None
    namespace: Sequence[str] = ()
    embedding: Sequence[float] | None = None
    readable_by: Iterable[str] | None = None
    writable_by: Iterable[str] | None = None


@dataclass(frozen=True)
class Put:
    """Write ``value`` under ``key`` in ``namespace``: a new memory, or an update of the live
    one holding the key (nothing at all if it holds this value and metadata already)."""

    namespace: Sequence[str]
    key: str
    value: Any
    metadata: Mapping[str, Any] | None = None
    embedding: Sequence[float] | None = None
    readable_by: Iterable[str] | None = None
    writable_by: Iterable[str] | None = None


@dataclass(frozen=True)
class Update:
    """See :meth:`SharedMemory.update`."""

    memory_id: str
    value: Any = UNSET
    metadata: Mapping[str, Any] | None = None
    expected_version: int | None = None
    embedding: Sequence[float] | None = None
    readable_by: Iterable[str] | None = None
    writable_by: Iterable[str] | None = None


@dataclass(frozen=True)
class Delete:
    """Delete a memory by id, or the one holding ``key`` in ``namespace`` (nothing if none
    does)."""

    memory_id: str | None = None
    namespace: Sequence[str] | None = None
    key: str | None = None
    expected_version: int | None = None


Change = Write | Put | Update | Delete
#: What each change returns: a memory id (write, put), a version (update, delete), or 0 for a
#: delete by key that found nothing.
Result = str | int


class _State:
    """A memory as the batch sees it: its live entry (``None`` when gone or never written) and
    its last version (0 if it has none). A state after an event of the batch folds that event
    only when a later change asks for the entry (most batches are one write, asked nothing)."""

    __slots__ = ("_before", "_entry", "_new", "version")

    def __init__(self, entry: MemoryEntry | None, version: int, *,
                 before: MemoryEntry | None = None, new: NewEvent | None = None) -> None:
        self._entry, self.version, self._before, self._new = entry, version, before, new

    @property
    def entry(self) -> MemoryEntry | None:
        if self._new is not None:
            self._entry = evolve(self._before, seal(self._new, 0, 0, GENESIS_HASH))
            self._new = self._before = None
        return self._entry


class Plan:
    """The events a batch of changes makes, decided for ``agent`` (``None``: the operator)
    writing as ``actor``."""

    def __init__(self, memory: SharedMemory, agent: str | None, actor: str) -> None:
        self.memory = memory
        self.log = memory.log
        self.agent = agent
        self.actor = actor
        self.events: list[NewEvent] = []
        self._states: dict[str, _State] = {}

    @cached_property
    def _gate(self) -> Gate | None:
        return self.memory._gate(self.agent)

    @cached_property
    def principals(self) -> frozenset[str] | None:
        """The actor's principals (``None``: the operator's, who may do anything)."""
        return None if self._gate is None else self._gate.principals()

    @property
    def groups(self) -> dict[str, bool]:
        return {} if self._gate is None else self._gate.groups()

    # --- the state of a memory ----------------------------------------------------------------

    def _state(self, memory_id: str) -> _State:
        found = self._states.get(memory_id)
        if found is None:
            entry: MemoryEntry | None = None
            version = 0
            for event in self.log.query(EventFilter(memory_id=memory_id)):
                entry = evolve(entry, event)
                version = event.version or version
            found = self._states[memory_id] = _State(entry, version)
        return found

    def _add(self, new: NewEvent) -> None:
        """Take ``new`` into the batch and the state the changes after it see (a memory's first
        version starts from nothing: no need to read the log for it)."""
        assert new.memory_id is not None and new.version is not None
        before = None if new.version == 1 else self._state(new.memory_id).entry
        self._states[new.memory_id] = _State(None, new.version, before=before, new=new)
        self.events.append(new)

    def _recorded(self, namespace: Namespace, key: str, event_id: str) -> str | None:
        """The memory under ``key`` that a change with ``event_id`` already went to (a retried
        put, whatever happened to the memory since), or ``None``."""
        n = 1
        while True:
            memory_id = keyed_memory_id(namespace, key, n)
            history = self.log.query(EventFilter(memory_id=memory_id))
            if not history:
                return None
            if any(event.event_id == event_id for event in history):
                return memory_id
            n += 1

    def _holder(self, namespace: Namespace, key: str) -> tuple[str, _State]:
        """The id and state of the last memory written under ``key`` (live or not), or of the
        next one to write when none was: memory ``n`` of a key is written only after memory
        ``n - 1``, so a galloping search finds the last in a few looks."""
        def exists(n: int) -> bool:
            return self._state(keyed_memory_id(namespace, key, n)).version > 0

        low, high = 0, 1  # memory `low` exists (0: none), `high` is to look at
        while exists(high):
            low, high = high, high * 2
        while high - low > 1:  # low exists, high does not
            middle = (low + high) // 2
            low, high = (middle, high) if exists(middle) else (low, middle)
        last = keyed_memory_id(namespace, key, max(low, 1))
        if low and self._state(last).entry is not None:
            return last, self._state(last)
        nxt = keyed_memory_id(namespace, key, low + 1)
        return nxt, self._state(nxt)

    # --- checks -------------------------------------------------------------------------------

    def _check(self, memory_id: str, state: _State, what: str,
               address: tuple[Namespace, str] | None = None) -> MemoryEntry:
        """The live entry of a memory the actor may change; a memory it may not read is not
        found, or, named by a key, :class:`PermissionDeniedError` naming only that key."""
        entry = state.entry
        if entry is None:
            raise MemoryNotFoundError(memory_id)
        if self.principals is None:
            return entry
        assert self.agent is not None
        target = f"memory {memory_id!r}" if address is None else \
            f"key {address[1]!r} in namespace {address[0]!r}"
        if not allows(entry.readable_by, self.principals):
            if address is None:
                raise MemoryNotFoundError(memory_id)
            raise PermissionDeniedError(self.agent, what, target)
        if not allows(entry.writable_by, self.principals):
            raise PermissionDeniedError(self.agent, what, target)
        return entry

    # --- the changes --------------------------------------------------------------------------

    def change(self, change: Change) -> Result:
        if isinstance(change, Put):
            return self.write(Write(change.value, change.metadata, None, change.key,
                                    change.namespace, change.embedding, change.readable_by,
                                    change.writable_by))
        if isinstance(change, Write):
            return self.write(change)
        if isinstance(change, Update):
            return self.update(change)
        if isinstance(change, Delete):
            return self.delete(change)
        raise InvalidInputError(f"a change is a Write, Put, Update or Delete, not {change!r}")

    def write(self, op: Write, event_id: str | None = None) -> str:
        namespace = check_namespace(op.namespace)
        scope, data = self.memory._write_fields(
            self.agent, lambda: self.groups, op.value, op.metadata, op.context_id, op.embedding,
            op.readable_by, op.writable_by)
        if namespace:
            data["namespace"] = list(namespace)
        if op.key is None:
            memory_id = event_id or new_id()
            self._add(self.memory._new_event(EventType.MEMORY_WRITTEN, scope, self.actor, data,
                                             memory_id=memory_id, version=1,
                                             event_id=memory_id))
            return memory_id
        key = check_key(op.key)
        if event_id is not None:
            retried = self._recorded(namespace, key, event_id)
            if retried is not None:
                return retried  # the same answer as the first time, nothing recorded again
        memory_id, state = self._holder(namespace, key)
        if state.entry is None:
            data["key"] = key
            self._add(self.memory._new_event(EventType.MEMORY_WRITTEN, scope, self.actor, data,
                                             memory_id=memory_id, version=1,
                                             event_id=event_id or new_id()))
            return memory_id
        entry = self._check(memory_id, state, "put", (namespace, key))
        changed = {name: item for name, item in data.items()
                   if name in ("embedding", "readable_by", "writable_by", "value", "metadata")}
        if _holds(entry, changed):
            return memory_id  # a retried put: nothing to record
        self._add(self.memory._new_event(EventType.MEMORY_UPDATED, entry.scope, self.actor,
                                         changed, memory_id=memory_id,
                                         version=state.version + 1,
                                         event_id=event_id or new_id()))
        return memory_id

    def update(self, op: Update) -> int:
        memory_id = check_id(op.memory_id, "memory_id")
        data = self.memory._update_fields(op.value, op.metadata, op.embedding, op.readable_by,
                                          op.writable_by)
        return self._versioned(EventType.MEMORY_UPDATED, memory_id, data, op.expected_version,
                               "update")

    def delete(self, op: Delete) -> int:
        if op.memory_id is not None:
            if op.key is not None or op.namespace is not None:
                raise InvalidInputError("delete names a memory_id or a namespace and key")
            return self._versioned(EventType.MEMORY_DELETED, check_id(op.memory_id, "memory_id"),
                                   {}, op.expected_version, "delete")
        namespace, key = check_namespace(op.namespace or ()), check_key(op.key)
        memory_id, state = self._holder(namespace, key)
        if state.entry is None:
            return 0
        self._check(memory_id, state, "delete", (namespace, key))
        return self._versioned(EventType.MEMORY_DELETED, memory_id, {}, op.expected_version,
                               "delete")

    def _versioned(self, type: str, memory_id: str, data: dict[str, Any],
                   expected_version: int | None, what: str) -> int:
        self.memory._check_expected(expected_version)
        state = self._state(memory_id)
        entry = self._check(memory_id, state, what)
        if expected_version is not None and expected_version != state.version:
            raise VersionConflictError(memory_id, expected_version, state.version)
        self._add(self.memory._new_event(type, entry.scope, self.actor, data,
                                         memory_id=memory_id, version=state.version + 1,
                                         event_id=new_id()))
        return state.version + 1


def _holds(entry: MemoryEntry, data: Mapping[str, Any]) -> bool:
    """True if ``entry`` holds everything ``data`` (a payload) would set."""
    if "embedding" in data and stored_vector(data["embedding"]) != entry.embedding:
        return False
    for name in ("readable_by", "writable_by"):
        if name in data and tuple(data[name]) != getattr(entry, name):
            return False
    # Compared encoded: == holds True == 1 == 1.0, which are stored as different values.
    return encode_content({"value": entry.value, "metadata": entry.metadata}) == encode_content(
        {"value": data.get("value"), "metadata": data.get("metadata", {})})


def apply_changes(memory: SharedMemory, agent: str | None, actor: str,
                  changes: Sequence[Change]) -> list[Result]:
    """Decide ``changes`` and append their events as one batch (see :func:`append_plan`);
    return what each change returns."""
    if isinstance(changes, (str, bytes, Mapping)) or not isinstance(changes, Sequence):
        raise InvalidInputError("apply takes a list of changes")
    return append_plan(memory, agent, actor, lambda plan: [plan.change(c) for c in changes])


def append_plan(memory: SharedMemory, agent: str | None, actor: str,
                decide: Callable[[Plan], list[Result]]) -> list[Result]:
    """Make a plan with ``decide`` and append its events as one batch, deciding again if
    another writer moved a memory it touches in between; return what ``decide`` returned."""
    for attempt in range(RETRIES):
        plan = Plan(memory, agent, actor)
        results = decide(plan)
        if not plan.events:
            return results
        try:
            recorded = memory.log.append(plan.events)
        except VersionConflictError:
            backoff(attempt)
            continue
        memory.freshness.wrote(recorded[-1].position, recorded)
        return results
    raise ConflictError(f"a batch of changes lost the race {RETRIES} times")
