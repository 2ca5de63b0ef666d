"""The pure fold of events into memories: shared by every read model, replay and time travel.

No I/O here. ``evolve`` turns one memory's previous state and one event into its next state;
``changes`` folds a batch into the net change per memory; ``fold`` builds a whole view; ``select``
answers a scoped read from a view. Every read model computes with these, so every backend sees
the same memories by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from memswarm_es.events import ENDING_EVENT_TYPES, Event, EventType, from_micros
from memswarm_es.scopes import Scope


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    """One live memory as a read model holds it.

    ``position`` is where the memory was first written (reads are ordered by it);
    ``last_position`` is where its current version was recorded. ``damaged`` is ``None``, or
    why the event behind the current version could not be read (its value is then ``None``).
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
        """A plain dict (``id`` is the memory id), e.g. for JSON."""
        out = asdict(self)
        out["id"] = out.pop("memory_id")
        out["created_at"] = self.created_at.isoformat()
        out["updated_at"] = self.updated_at.isoformat()
        return out

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access (``entry["value"]``), as the seed's dict entries allowed."""
        if key == "id":
            return self.memory_id
        if key in self.__dataclass_fields__:
            return getattr(self, key)
        raise KeyError(key)


ENTRY_FIELDS = tuple(f.name for f in fields(MemoryEntry))
_REQUIRED_FIELDS = sum(1 for f in fields(MemoryEntry) if f.default is MISSING)


def entry_row(entry: MemoryEntry) -> list[Any]:
    """An entry as a plain list, field by field: the one storage codec of every read model."""
    return [getattr(entry, name) for name in ENTRY_FIELDS]


def with_content(entry: MemoryEntry, value: Any, metadata: dict[str, Any]) -> MemoryEntry:
    """``entry`` holding ``value`` and ``metadata`` instead (a detached copy for a reader),
    built field by field: three times faster than ``dataclasses.replace`` on the read path."""
    return MemoryEntry(entry.memory_id, value, metadata, entry.agent_id, entry.group_id,
                       entry.context_id, entry.version, entry.position, entry.last_position,
                       entry.created_at_us, entry.updated_at_us, entry.created_by,
                       entry.updated_by, entry.damaged)


def entry_from_row(row: Sequence[Any]) -> MemoryEntry:
    """Inverse of :func:`entry_row`; rows written before optional fields were added still load.
    Raises ``ValueError`` for a row of another shape."""
    if not _REQUIRED_FIELDS <= len(row) <= len(ENTRY_FIELDS):
        raise ValueError(f"an entry row has {len(row)} fields, not {len(ENTRY_FIELDS)}")
    return MemoryEntry(*row)


@dataclass(frozen=True, slots=True)
class Change:
    """The net effect of a batch on one memory: ``after is None`` means it is gone."""

    memory_id: str
    before: MemoryEntry | None
    after: MemoryEntry | None


def evolve(entry: MemoryEntry | None, event: Event) -> MemoryEntry | None:
    """The state of one memory after ``event`` (events of other memories must not be passed).

    Total: no event stops a fold. A version whose payload was redacted (forgotten) reads as
    value ``None``, no metadata; one whose payload cannot be read as content (damaged, or
    written by another program) reads the same way with ``damaged`` saying why.
    """
    if event.type == EventType.MEMORY_WRITTEN:
        data, problem = _content(event)
        return MemoryEntry(
            memory_id=event.memory_id or "", value=data.get("value"),
            metadata=data.get("metadata") or {}, agent_id=event.scope.agent_id,
            group_id=event.scope.group_id, context_id=event.scope.context_id,
            version=event.version or 1, position=event.position,
            last_position=event.position, created_at_us=event.recorded_at_us,
            updated_at_us=event.recorded_at_us, created_by=event.actor, updated_by=event.actor,
            damaged=problem,
        )
    if entry is None:
        return None
    if event.type == EventType.MEMORY_UPDATED:
        data, problem = _content(event)
        if event.payload is None or problem:
            data = {"value": None, "metadata": {}}
        return MemoryEntry(
            memory_id=entry.memory_id, value=data.get("value", entry.value),
            metadata=data.get("metadata", entry.metadata),
            agent_id=entry.agent_id, group_id=entry.group_id, context_id=entry.context_id,
            version=event.version or entry.version + 1, position=entry.position,
            last_position=event.position, created_at_us=entry.created_at_us,
            updated_at_us=event.recorded_at_us, created_by=entry.created_by,
            updated_by=event.actor,
            damaged=problem or (entry.damaged if "value" not in data else None),
        )
    if event.type in ENDING_EVENT_TYPES:
        return None
    return entry


def _content(event: Event) -> tuple[dict[str, Any], str | None]:
    """A memory event's payload as content (``{}`` when redacted or damaged), and why it is
    damaged, if it is."""
    data, problem = event.content()
    return data or {}, problem


def changes(prior: Mapping[str, MemoryEntry], events: Iterable[Event]) -> list[Change]:
    """Fold ``events`` over the ``prior`` entries of the memories they touch; net change each."""
    before: dict[str, MemoryEntry | None] = {}
    after: dict[str, MemoryEntry | None] = {}
    for event in events:
        memory_id = event.memory_id
        if memory_id is None:
            continue
        if memory_id not in after:
            before[memory_id] = prior.get(memory_id)
            after[memory_id] = before[memory_id]
        after[memory_id] = evolve(after[memory_id], event)
    return [Change(m, before[m], after[m]) for m in after if before[m] != after[m]]


@dataclass
class View:
    """Live memories keyed by id, plus the position they were folded up to."""

    entries: dict[str, MemoryEntry] = field(default_factory=dict)
    position: int = 0


def fold(events: Iterable[Event], view: View | None = None) -> View:
    """A new view: ``view`` (empty by default) with ``events`` applied; ``view`` is not changed."""
    out = View(dict(view.entries), view.position) if view else View()
    return fold_into(out, events)


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
        view.position = event.position
    return view


def select(entries: Iterable[MemoryEntry], scope: Scope) -> list[MemoryEntry]:
    """The entries inside ``scope`` (AND of the parts set), ordered by position."""
    return sorted((e for e in entries if scope.matches(e.scope)), key=lambda e: e.position)
