"""The facade: one class that ties a log and a read model into a shared memory, and the seed's
names, which only choose the log and the read model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from projections import open_read_model
from projections.base import ReadModel, SearchableReadModel, SearchHit
from projections.fold import MemoryEntry
from projections.keys import NamespaceQuery, Query
from projections.projector import Progress, Projector
from projections.sql import SQLReadModel

from .access import Gate, audit_seen_by
from .audit import AuditPage, MemoryVersion, audit, history
from .batch import UNSET, Change, Plan, Put, Result, Write, append_plan, apply_changes
from .commands import append_change, recorded_retry
from .errors import (
    InvalidIdError,
    InvalidInputError,
    InvalidScopeError,
    InvalidValueError,
    MemoryNotFoundError,
    MemSwarmError,
    NotSupportedError,
    PermissionDeniedError,
    ValueTooLargeError,
    VersionConflictError,
)
from .events import (
    ENDING_EVENT_TYPES,
    Event,
    EventType,
    NewEvent,
    encode_content,
    membership_event,
    new_id,
)
from .forget import forget
from .freshness import Freshness, InlineProjection, ReadProjection, RunnerProjection, View
from .log import open_log
from .log.base import Digest, EventFilter, EventLog, Verification
from .log.inprocess import InMemoryEventLog
from .log.sql import SQLEventLog
from .namespaces import check_key, check_namespace
from .principals import OPERATOR, PERMISSION_FIELDS, check_principals
from .scopes import SCOPE_NAMES, Scope, check_id
from .snapshots import snapshot_store_for
from .telemetry import timed_read, timed_run
from .timetravel import DEFAULT_SNAPSHOT_EVERY, PastMemory, TimeMachine, verify_log

if TYPE_CHECKING:
    from .agent import AgentMemory
    from .subscribe import Subscription

DEFAULT_MAX_VALUE_BYTES = 1 << 20
DEFAULT_WAIT_TIMEOUT = 10.0
MAX_REASON_LENGTH = 1000


class SharedMemory:
    """A shared memory: writes become events in ``log``; reads come from ``read_model``.

    By default (``project_inline``) the read model is caught up before every read and after
    every write, so a write is visible to a read from the same process as soon as it returns,
    and writes made by other processes to the same log are seen by the next read.

    With ``project_inline=False`` a separate runner projects the log (``memswarm project``, or
    :class:`~projections.runner.ProjectorRunner`); a read then waits until the read model has
    reached this memory's last write (read-your-writes), for at most ``wait_timeout`` seconds,
    and raises :class:`ReadModelBehindError` rather than answer without it. :meth:`lag` says how
    far behind the log the read model is. Thread-safe.
    """

    #: A memory built from a log and a read model catches the view up when made (inline); the
    #: seed names wait for the first read, so that one composed into a HybridMemory (which
    #: keeps only its log or its read model) has replayed nothing.
    _catch_up_on_open = True

    def __init__(self, log: EventLog, read_model: ReadModel, *,
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES, batch_size: int = 1000,
                 snapshot_every: int = DEFAULT_SNAPSHOT_EVERY, project_inline: bool = True,
                 wait_timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        if max_value_bytes < 1:
            raise ValueError("max_value_bytes must be positive")
        self.log = log
        self.max_value_bytes = max_value_bytes
        self._view = View(log, read_model, batch_size)
        policy = InlineProjection if project_inline else RunnerProjection
        self.freshness: Freshness = policy(self._view, wait_timeout)
        self.time_machine = TimeMachine(log, snapshot_store_for(log), snapshot_every)
        if self._catch_up_on_open:
            self.freshness.before_read()
        else:  # refuse the view of another log now; the first read catches the view up
            self.projector.check_log()

    @property
    def read_model(self) -> ReadModel:
        """The read model reads come from (``replace_read_model`` may switch it)."""
        return self._view.read_model

    @property
    def projector(self) -> Projector:
        return self._view.projector

    @property
    def project_inline(self) -> bool:
        return isinstance(self.freshness, InlineProjection)

    @property
    def wait_timeout(self) -> float:
        return self.freshness.wait_timeout

    # --- acting as an agent ---------------------------------------------------------------------

    def agent(self, agent_id: str) -> AgentMemory:
        """A handle through which ``agent_id`` acts as itself: its writes are its own, and it
        reads, changes and sees only what the permissions and its groups allow (see the
        README's table). This unbound memory is the operator, who may do anything."""
        from .agent import AgentMemory

        return AgentMemory(self, agent_id)

    def _gate(self, agent: str | None) -> Gate | None:
        """The access decisions for ``agent`` (``None`` for the operator), with the read model
        caught up first, so that its memberships and permissions are current."""
        if agent is None:
            return None
        self.freshness.before_read()
        return Gate(self.log, self.read_model, agent)

    # --- writing -------------------------------------------------------------------------------

    def write_scope(self, value: Any, metadata: Mapping[str, Any] | None = None,
                    context_id: str | None = None, *, actor: str | None = None,
                    event_id: str | None = None, embedding: Sequence[float] | None = None,
                    readable_by: Iterable[str] | None = None,
                    writable_by: Iterable[str] | None = None, key: str | None = None,
                    namespace: Sequence[str] | None = None) -> str:
        """Write a new memory and return its ``memory_id``.

        ``metadata`` may carry the scopes ``agent_id`` and ``group_id`` (and ``context_id``),
        and the permissions ``readable_by`` and ``writable_by`` (lists of principals:
        ``"agent:<id>"``, ``"group:<id>"``, ``"*"``; also accepted as arguments); the rest is
        kept as the memory's metadata. Without permissions, the memory is readable by its agent
        and the members of its group, and writable by its agent. ``actor`` (who writes)
        defaults to ``"operator"``. Giving the same ``event_id`` again returns the first
        write's memory id and writes nothing. ``embedding``, if given, is the memory's vector
        for a searching read model (kept in the event, so a replay uses it too).

        ``namespace`` (a tuple of labels) and ``key`` address the memory: a key names at most
        one live memory of its namespace, so a write with a key that a live memory holds
        updates that memory (see :meth:`put`).
        """
        return self._write(None, _actor(actor) or OPERATOR, value, metadata, context_id,
                           event_id, embedding, readable_by, writable_by, key, namespace)

    def put(self, namespace: Sequence[str], key: str, value: Any,
            metadata: Mapping[str, Any] | None = None, *, actor: str | None = None,
            embedding: Sequence[float] | None = None,
            readable_by: Iterable[str] | None = None,
            writable_by: Iterable[str] | None = None) -> str:
        """Write ``value`` under ``key`` in ``namespace`` and return the memory's id: a new
        memory if no live memory holds the key (after a delete, a new one), else an update of
        the one that does (nothing is recorded if it holds this value and metadata already).
        """
        (held,) = self.apply([Put(namespace, key, value, metadata, embedding, readable_by,
                                  writable_by)], actor=actor)
        assert isinstance(held, str)
        return held

    def apply(self, changes: Sequence[Change], *, actor: str | None = None) -> list[Result]:
        """Record ``changes`` (:class:`~memswarm_es.batch.Write`, ``Put``, ``Update``,
        ``Delete``) as one atomic append, all or nothing: every change is checked first, and
        any error records none of them. Returns what each change returns (a memory id for a
        write or put, the new version for an update or delete, 0 for a delete of an absent
        key)."""
        return apply_changes(self, None, _actor(actor) or OPERATOR, changes)

    def _write(self, agent: str | None, actor: str, value: Any,
               metadata: Mapping[str, Any] | None, context_id: str | None,
               event_id: str | None, embedding: Sequence[float] | None,
               readable_by: Iterable[str] | None, writable_by: Iterable[str] | None,
               key: str | None = None, namespace: Sequence[str] | None = None) -> str:
        # A memory's id is the event_id of its write, so a retried write finds the same memory.
        memory_id = check_id(event_id, "event_id") if event_id is not None else None
        write = Write(value, metadata, context_id, key, namespace or (), embedding, readable_by,
                      writable_by)
        if key is None:  # one event, decided without reading the log
            plan = Plan(self, agent, actor)
            new_id = plan.write(write, memory_id)
            self._append(plan.events[0])
            return new_id
        (held,) = append_plan(self, agent, actor, lambda plan: [plan.write(write, memory_id)])
        assert isinstance(held, str)
        return held

    def _write_fields(self, agent: str | None, groups: Callable[[], Mapping[str, bool]],
                      value: Any,
                      metadata: Mapping[str, Any] | None, context_id: str | None,
                      embedding: Sequence[float] | None, readable_by: Iterable[str] | None,
                      writable_by: Iterable[str] | None) -> tuple[Scope, dict[str, Any]]:
        """The scope and the payload of a new memory, checked, for ``agent`` (whose groups
        ``groups`` tells) or the operator (``None``)."""
        scope_ids, extra, permissions = _split_metadata(metadata)
        permissions = _permissions(permissions, readable_by, writable_by)
        if context_id is not None:
            if scope_ids.get("context_id", context_id) != context_id:
                raise InvalidScopeError("context_id given twice with different values")
            scope_ids["context_id"] = context_id
        if agent is not None and scope_ids.setdefault("agent_id", agent) != agent:
            raise PermissionDeniedError(agent, "write as", f"agent {scope_ids['agent_id']!r}")
        scope = Scope(**scope_ids)
        if agent is not None and scope.group_id is not None \
                and scope.group_id not in groups():
            raise PermissionDeniedError(agent, "write into", f"group {scope.group_id!r}")
        return scope, {"value": value, "metadata": extra, **permissions,
                       **self._vector(embedding)}

    def update(self, memory_id: str, value: Any = UNSET,
               metadata: Mapping[str, Any] | None = None, *, expected_version: int | None = None,
               actor: str | None = None, event_id: str | None = None,
               embedding: Sequence[float] | None = None,
               readable_by: Iterable[str] | None = None,
               writable_by: Iterable[str] | None = None) -> int:
        """Replace a memory's value, metadata and/or permissions; return the new version.

        With ``expected_version``, raise :class:`VersionConflictError` unless the memory is still
        at that version. Without it, the update applies to whatever version is current.
        ``actor`` defaults to ``"operator"``.
        """
        return self._update(None, _actor(actor) or OPERATOR, memory_id, value, metadata,
                            expected_version, event_id, embedding, readable_by, writable_by)

    def _update(self, agent: str | None, actor: str, memory_id: str, value: Any,
                metadata: Mapping[str, Any] | None, expected_version: int | None,
                event_id: str | None, embedding: Sequence[float] | None,
                readable_by: Iterable[str] | None, writable_by: Iterable[str] | None) -> int:
        data = self._update_fields(value, metadata, embedding, readable_by, writable_by)
        return self._change(agent, actor, EventType.MEMORY_UPDATED, memory_id, data,
                            expected_version, event_id)

    def _update_fields(self, value: Any, metadata: Mapping[str, Any] | None,
                       embedding: Sequence[float] | None, readable_by: Iterable[str] | None,
                       writable_by: Iterable[str] | None) -> dict[str, Any]:
        """The payload of an update, checked."""
        data: dict[str, Any] = self._vector(embedding)
        if value is not UNSET:
            data["value"] = value
        permissions: dict[str, Any] = {}
        if metadata is not None:
            scope_ids, extra, permissions = _split_metadata(metadata)
            if extra or not permissions:  # metadata of permissions only keeps the metadata
                data["metadata"] = extra
            if scope_ids:
                raise InvalidScopeError(
                    f"the scopes of a memory cannot change (got {sorted(scope_ids)})")
        data.update(_permissions(permissions, readable_by, writable_by))
        return data

    def set_permissions(self, memory_id: str, readable_by: Iterable[str] | None = None,
                        writable_by: Iterable[str] | None = None, *,
                        expected_version: int | None = None, actor: str | None = None,
                        event_id: str | None = None) -> int:
        """Set who may read and/or who may change a memory (a new version recording only that);
        return the new version."""
        return self._set_permissions(None, _actor(actor) or OPERATOR, memory_id, readable_by,
                                     writable_by, expected_version, event_id)

    def _set_permissions(self, agent: str | None, actor: str, memory_id: str,
                         readable_by: Iterable[str] | None, writable_by: Iterable[str] | None,
                         expected_version: int | None, event_id: str | None) -> int:
        data = _permissions({}, readable_by, writable_by)
        if not data:
            raise InvalidInputError("give readable_by, writable_by or both")
        return self._change(agent, actor, EventType.MEMORY_UPDATED, memory_id, data,
                            expected_version, event_id, "change the permissions of")

    def delete(self, memory_id: str, *, expected_version: int | None = None,
               actor: str | None = None, event_id: str | None = None) -> int:
        """Delete a memory (a tombstone: the log keeps every version); return its last version."""
        return self._change(None, _actor(actor) or OPERATOR, EventType.MEMORY_DELETED,
                            memory_id, {}, expected_version, event_id)

    def _change(self, agent: str | None, actor: str, type: str, memory_id: str,
                data: dict[str, Any], expected_version: int | None, event_id: str | None,
                what: str | None = None) -> int:
        check_id(memory_id, "memory_id")
        self._check_expected(expected_version)
        what = what or ("delete" if type == EventType.MEMORY_DELETED else "update")
        payload = encode_content(data)
        self._check_size(payload)
        gate = self._gate(agent)

        def allowed() -> None:
            if gate is not None:
                gate.check_change(memory_id, self.log.query(EventFilter(memory_id=memory_id)),
                                  what)

        if event_id is not None:
            allowed()  # before a retry's answer could tell anything of the memory
            done = recorded_retry(self.log, memory_id, check_id(event_id, "event_id"), type,
                                  payload)
            if done is not None:  # a retry of a change that was recorded: the same answer
                return done.version or 0

        def decide(last: Event | None) -> NewEvent:
            if last is None or last.type in ENDING_EVENT_TYPES:
                raise MemoryNotFoundError(memory_id)
            allowed()
            version = last.version or 0
            if expected_version is not None and expected_version != version:
                raise VersionConflictError(memory_id, expected_version, version)
            return NewEvent(type=type, scope=last.scope, actor=actor, payload=payload,
                            memory_id=memory_id, version=version + 1,
                            event_id=new_id() if event_id is None else event_id)

        recorded = append_change(self.log, memory_id, decide, retry=expected_version is None)
        self.freshness.wrote(recorded.position, [recorded])
        return recorded.version or 0

    @staticmethod
    def _check_expected(expected_version: int | None) -> None:
        if expected_version is not None and (
                not _is_int(expected_version) or expected_version < 1):
            raise InvalidValueError("expected_version must be a positive int")

    def _new_event(self, type: str, scope: Scope, actor: str, data: dict[str, Any], *,
                   memory_id: str, version: int, event_id: str) -> NewEvent:
        payload = encode_content(data)
        self._check_size(payload)
        return NewEvent(type=type, scope=scope, actor=actor, payload=payload,
                        memory_id=memory_id, version=version, event_id=event_id)

    def _vector(self, embedding: Sequence[float] | None) -> dict[str, list[float]]:
        """The payload field of a caller's own vector, checked against the read model."""
        if embedding is None:
            return {}
        if isinstance(embedding, (str, bytes, Mapping)) or not isinstance(embedding, Iterable):
            raise InvalidValueError(
                f"embedding must be a sequence of numbers, not {type(embedding).__name__}")
        vector = list(embedding)
        if not vector or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                 and math.isfinite(x) for x in vector):
            raise InvalidValueError("embedding must be a non-empty sequence of finite numbers")
        vector = [float(x) for x in vector]
        self.read_model.check_vector(vector)
        return {"embedding": vector}

    def _check_size(self, payload: bytes) -> None:
        if len(payload) > self.max_value_bytes:
            raise ValueTooLargeError(
                f"encoded value is {len(payload)} bytes; the limit is {self.max_value_bytes}")

    def _append(self, new: NewEvent) -> Event:
        (recorded,) = self.log.append([new])
        self.freshness.wrote(recorded.position, [recorded])
        return recorded

    # --- groups ----------------------------------------------------------------------------------

    def join_group(self, agent_id: str, group_id: str, admin: bool = False, *,
                   by: str | None = None) -> int:
        """Make ``agent_id`` a member of ``group_id`` (an admin of it if ``admin``), or change
        its admin flag; return the position of the event. ``by`` is the admin agent doing it
        (``None``: the operator, who makes a group's first admin)."""
        if not isinstance(admin, bool):
            raise InvalidValueError(f"admin must be True or False, not {admin!r}")
        return self._membership(by, agent_id, group_id, admin)

    def leave_group(self, agent_id: str, group_id: str, *, by: str | None = None) -> int:
        """Take ``agent_id`` out of ``group_id``; return the position of the event. ``by`` is
        the agent doing it: the agent itself, or an admin of the group (``None``: the
        operator). It loses at once every memory it could read only through the group."""
        return self._membership(by, agent_id, group_id, None)

    def _membership(self, by: str | None, agent_id: str, group_id: str,
                    admin: bool | None) -> int:
        new = membership_event(agent_id, group_id, admin, by or OPERATOR)  # checks its input
        if OPERATOR in (agent_id, by):
            raise InvalidIdError(f"{OPERATOR!r} names the unbound memory, not an agent")
        if by is not None:
            gate = self._gate(check_id(by, "by"))
            assert gate is not None
            if not (admin is None and by == agent_id) and not gate.groups().get(group_id):
                raise PermissionDeniedError(by, "change the members of", f"group {group_id!r}")
        return self._append(new).position

    def members(self, group_id: str) -> dict[str, bool]:
        """The current members of ``group_id``, each with whether it is an admin."""
        check_id(group_id, "group_id")
        self.freshness.before_read()
        return self.read_model.members(group_id)

    # --- reading -------------------------------------------------------------------------------

    def read_scope(self, agent_id: str | None = None, group_id: str | None = None,
                   context_id: str | None = None, *, namespace_prefix: Sequence[str] | None = None,
                   filter: Mapping[str, Any] | None = None, order_by: str | None = None,
                   limit: int | None = None, offset: int = 0,
                   **unknown: Any) -> list[MemoryEntry]:
        """Live memories inside every scope given (AND), ordered by position.

        ``namespace_prefix`` keeps those whose namespace is it or lies below it; ``filter``
        those whose value (a map) matches: ``{"field": v}`` (equal) or ``{"field": {"$gt": v}}``
        (``$eq $ne $gt $gte $lt $lte``). ``order_by="updated_at"`` puts the last changed
        first; ``limit`` and ``offset`` take a page."""
        query = Query.checked(namespace_prefix, filter, order_by, limit, offset)
        return self._read_scope(None, Scope.from_query(agent_id, group_id, context_id, unknown),
                                query)

    @timed_read("read_scope")
    def _read_scope(self, reader: str | None, scope: Scope,
                    query: Query | None = None) -> list[MemoryEntry]:
        self.freshness.before_read()
        if query is None or query.plain():
            return self.read_model.read_scope(scope, reader)
        return self.read_model.query(scope, query, reader)

    def get_by_key(self, namespace: Sequence[str], key: str) -> MemoryEntry | None:
        """The live memory holding ``key`` in ``namespace``, or ``None``."""
        return self._get_by_key(None, namespace, key)

    def _get_by_key(self, reader: str | None, namespace: Sequence[str],
                    key: str) -> MemoryEntry | None:
        address = check_namespace(namespace), check_key(key)
        self.freshness.before_read()
        return self.read_model.get_by_key(*address, reader)

    def namespaces(self, prefix: Sequence[str] | None = None,
                   suffix: Sequence[str] | None = None, max_depth: int | None = None,
                   limit: int = 100, offset: int = 0) -> list[tuple[str, ...]]:
        """The namespaces holding live memories, sorted: those starting with ``prefix`` and
        ending with ``suffix`` (a label ``*`` matches any), cut to ``max_depth`` labels, a
        page of ``limit`` from ``offset``."""
        return self._namespaces(None, NamespaceQuery.checked(prefix, suffix, max_depth, limit,
                                                             offset))

    def _namespaces(self, reader: str | None, query: NamespaceQuery) -> list[tuple[str, ...]]:
        self.freshness.before_read()
        return self.read_model.list_namespaces(query, reader)

    def get(self, memory_id: str) -> MemoryEntry:
        """One live memory, or :class:`MemoryNotFoundError`."""
        return self._get(None, memory_id)

    @timed_read("get")
    def _get(self, reader: str | None, memory_id: str) -> MemoryEntry:
        check_id(memory_id, "memory_id")
        self.freshness.before_read()
        entry = self.read_model.get(memory_id, reader)
        if entry is None:
            raise MemoryNotFoundError(memory_id)
        return entry

    def search(self, query: str, agent_id: str | None = None, group_id: str | None = None,
               context_id: str | None = None, k: int = 10,
               where: Mapping[str, Any] | None = None) -> list[SearchHit]:
        """The ``k`` live memories inside the scopes given (and ``where`` on their metadata)
        closest in meaning to ``query``, closest first, each with its distance. Needs a read
        model that searches (Chroma)."""
        return self._search(None, query, Scope(agent_id, group_id, context_id), k, where)

    @timed_read("search")
    def _search(self, reader: str | None, query: str, scope: Scope, k: int,
                where: Mapping[str, Any] | None) -> list[SearchHit]:
        model = self.read_model
        if not isinstance(model, SearchableReadModel):
            raise NotSupportedError(
                f"{type(model).__name__} does not search; use ChromaSharedMemory")
        self.freshness.before_read()
        return model.search(query, scope, k, where, reader)

    def history(self, memory_id: str) -> list[MemoryVersion]:
        """Every version of one memory, oldest first, deletes and forgetting included."""
        return self._history(None, memory_id)

    def _history(self, agent: str | None, memory_id: str) -> list[MemoryVersion]:
        check_id(memory_id, "memory_id")
        gate = self._gate(agent)
        if gate is not None and not gate.readable([memory_id]):
            raise MemoryNotFoundError(memory_id)
        return history(self.log, memory_id)

    # --- audit, time travel, tamper evidence, forgetting ---------------------------------------

    def audit(self, *, actor: str | None = None, agent_id: str | None = None,
              group_id: str | None = None, context_id: str | None = None,
              since: datetime | None = None, until: datetime | None = None, after: int = 0,
              limit: int = 100) -> AuditPage:
        """The events that match every filter given (who wrote what, when), a page at a time."""
        return audit(self.log, actor=actor, scope=Scope(agent_id, group_id, context_id),
                     since=since, until=until, after=after, limit=limit)

    def _audit(self, agent: str | None, **filters: Any) -> AuditPage:
        gate = self._gate(agent)
        if gate is None:
            return self.audit(**filters)
        return audit_seen_by(gate, self.audit, **filters)

    def as_of(self, position: int | None = None, *, time: datetime | None = None,
              progress: Progress | None = None) -> PastMemory:
        """A read-only view of the memory as it stood at ``position`` or at ``time``."""
        if position is not None and (not _is_int(position) or position < 0):
            raise InvalidInputError(f"position must be a non-negative int, not {position!r}")
        if time is not None and (not isinstance(time, datetime) or time.tzinfo is None):
            raise InvalidInputError(f"time must be a timezone-aware datetime, not {time!r}")
        return self.time_machine.at(position, time, progress)

    @timed_run("verify")
    def verify(self, progress: Progress | None = None) -> Verification:
        """Walk the hash chain, then compare every snapshot with the fold of the log; the
        result names the first event (or snapshot) that does not match."""
        return verify_log(self.log, self.time_machine, progress)

    def digest(self) -> Digest:
        """The head position and its hash: keep it to check later that the log only grew."""
        return self.log.digest()

    def extends(self, digest: Digest) -> bool:
        """True if the log still extends an earlier ``digest`` (nothing rewritten or removed)."""
        return self.log.extends(digest)

    def forget(self, memory_id: str, reason: str, *, actor: str | None = None) -> int:
        """Erase the content of every version of a memory, live or deleted; return the position
        of the forget event (see :func:`memswarm_es.forget.forget`). The read model drops the
        memory before this returns."""
        return self._forget(None, _actor(actor) or OPERATOR, memory_id, reason)

    @timed_run("forget")
    def _forget(self, agent: str | None, actor: str, memory_id: str, reason: str) -> int:
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_LENGTH:
            raise InvalidValueError(
                f"a reason for forgetting is required: text of 1 to {MAX_REASON_LENGTH} characters")
        gate = self._gate(agent)

        def allowed(events: Sequence[Event]) -> None:
            if gate is not None:
                gate.check_change(memory_id, events, "forget")

        try:
            position = forget(self.log, self.time_machine, memory_id, reason, actor=actor,
                              allowed=allowed)
        except MemSwarmError:
            with contextlib.suppress(MemSwarmError):  # the forget's own error is the one to
                self.sync()  # report; even so the views drop the memory now if they can
            raise
        self.freshness.wrote(position)
        self.sync()
        return position

    # --- maintenance ---------------------------------------------------------------------------

    def sync(self) -> int:
        """Bring the read model up to the log's head; return its checkpoint.

        Inline, this catches it up; with a separate runner it waits for the runner (at most
        ``wait_timeout`` seconds, then :class:`ReadModelBehindError`).
        """
        return self.freshness.sync()

    @property
    def last_position(self) -> int:
        """The log position of this memory's last write (0 before its first)."""
        return self.freshness.last_position

    def wait_for(self, position: int | None = None, timeout: float | None = None) -> int:
        """Block until the read model has applied ``position`` (default: this memory's last
        write); return its checkpoint. Raise :class:`ReadModelBehindError` after ``timeout``
        seconds (default ``wait_timeout``)."""
        return self.freshness.wait_for(position, timeout)

    def lag(self) -> int:
        """How many events the read model is behind the log's head."""
        return self.projector.lag()

    def subscribe(self, agent_id: str | None = None, group_id: str | None = None,
                  context_id: str | None = None, *, after: int | None = None,
                  **unknown: Any) -> Subscription:
        """The memory versions of a scope (AND of the parts given) as the read model applies
        them, in log order: iterate to block for the next.

        Starts after the log's current head, or after ``after`` (pass a subscription's
        ``position`` to resume where it stopped: the gap is read from the log).
        """
        return self._subscribe(None, Scope.from_query(agent_id, group_id, context_id, unknown),
                               after)

    def _subscribe(self, agent: str | None, scope: Scope, after: int | None) -> Subscription:
        from .subscribe import Subscription

        gate = None if agent is None else Gate(self.log, self.read_model, agent)
        start = self.log.head() if after is None else after
        return Subscription(self.log, self.read_model, scope, start, gate=gate,
                            refresh=self.freshness.refresher())

    def lend_read_model(self) -> ReadModel:
        """The read model this memory gives as the cache side of a :class:`HybridMemory`: its
        own, or (for an ephemeral view of its own) the shared view it names; this memory is
        not used afterwards."""
        return self.read_model

    def lend_log(self) -> EventLog:
        """The log this memory gives as the persistent side of a :class:`HybridMemory`, with
        nothing of this memory's own view set up for it; this memory is not used afterwards."""
        return self.log

    def replace_read_model(self, new: ReadModel) -> ReadModel:
        """Switch reads to ``new`` (built beside the current one, e.g. by ``reembed``) once it
        has caught up with the log, atomically for this memory's readers and writers; return
        the read model it replaces, which this memory no longer touches."""
        return self._view.replace(new)

    def replay(self, progress: Progress | None = None) -> int:
        """Rebuild the read model from the log; return the position reached."""
        return self.projector.replay(progress)

    def close(self) -> None:
        self.read_model.close()
        self.log.close()

    def __enter__(self) -> SharedMemory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _split_metadata(metadata: Mapping[str, Any] | None
                    ) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """Separate the scope ids and the permissions from the rest of the metadata, checking
    the scope ids."""
    if metadata is None:
        return {}, {}, {}
    if not isinstance(metadata, Mapping):
        raise InvalidValueError(f"metadata must be a mapping, not {type(metadata).__name__}")
    scope_ids: dict[str, str] = {}
    extra: dict[str, Any] = {}
    permissions: dict[str, Any] = {}
    for key, item in metadata.items():
        if not isinstance(key, str):
            raise InvalidValueError(f"metadata keys must be strings, not {type(key).__name__}")
        if key in SCOPE_NAMES:
            if item is not None:
                scope_ids[key] = check_id(item, key)
        elif key in PERMISSION_FIELDS:
            if item is not None:
                permissions[key] = item
        else:
            extra[key] = item
    return scope_ids, extra, permissions


def _permissions(from_metadata: Mapping[str, Any], readable_by: Iterable[str] | None,
                 writable_by: Iterable[str] | None) -> dict[str, list[str]]:
    """The payload fields of the permissions given (as arguments or as metadata keys, not
    both), each checked."""
    out: dict[str, list[str]] = {}
    for name, given in zip(PERMISSION_FIELDS, (readable_by, writable_by), strict=True):
        if given is not None and name in from_metadata:
            raise InvalidInputError(f"{name} given both as an argument and in metadata")
        found = from_metadata.get(name, given)
        if found is not None:
            out[name] = list(check_principals(found, name))
    return out


def _is_int(value: object) -> bool:
    """True for an int that is not a bool (``True`` is no position or version)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _actor(actor: str | None) -> str | None:
    """A caller's ``actor=``, checked: an empty one is refused, never silently replaced."""
    return None if actor is None else check_id(actor, "actor")


class InMemorySharedMemory(SharedMemory):
    """Everything in this process: an in-process log and the in-memory read model."""

    _catch_up_on_open = False

    def __init__(self, **options: Any) -> None:
        super().__init__(open_log("memory://"), open_read_model("memory://"), **options)


class _KeptViewMemory(SharedMemory):
    """A memory whose SQL view its log keeps from the memory's first use (see
    :func:`_open_with_view`): any use of :attr:`log` through it sets the view up first."""

    @property
    def log(self) -> EventLog:
        view = self.__dict__.get("_view")
        if view is not None:
            view.ready()
        return self._log

    @log.setter
    def log(self, log: EventLog) -> None:
        self._log = log

    def lend_log(self) -> EventLog:
        return self._log

    def close(self) -> None:  # closing is no use: it sets nothing up
        self.read_model.close()
        self._log.close()


#: When the SQL view of a SQLite or PostgreSQL memory takes in the writes: folded by the next
#: read, all the writes since at once ("read"), or inside the transaction of every append
#: ("append": each write costs the view's rows too, and a view is never behind its log).
VIEW_UPKEEPS = ("read", "append")


def _open_with_view(memory: SharedMemory, log: SQLEventLog, view_upkeep: str,
                    options: dict[str, Any]) -> None:
    """Open ``memory`` on ``log`` and the SQL view in its database, which ``log`` keeps (folds
    once if missing; then folded at reads, or applied inside every append, by
    ``view_upkeep``) from the memory's first read or write: a memory only composed into a
    :class:`HybridMemory` folds nothing. The log is closed if the view cannot be made."""
    if view_upkeep not in VIEW_UPKEEPS:
        log.close()
        raise InvalidInputError(f"view_upkeep is one of {VIEW_UPKEEPS}, not {view_upkeep!r}")
    in_appends = view_upkeep == "append"
    try:
        view = SQLReadModel(log)
        SharedMemory.__init__(memory, log, view, **options)
    except BaseException:
        log.close()
        raise
    if not in_appends and isinstance(memory.freshness, InlineProjection):
        memory.freshness = ReadProjection(memory._view, memory.wait_timeout)
    memory._view.defer(lambda: log.keep_view(view, in_appends=in_appends))


class SQLiteSharedMemory(_KeptViewMemory):
    """A durable SQLite log (``db_path``) and its SQL view in the same file
    (:mod:`projections.sql`): opening reads no event (a file without the view yet is folded
    once), and every process that opens the file shares the one view. A write costs the log
    alone; the next read, in any process, folds the writes since into the view at once
    (``view_upkeep="append"`` applies each append to the view in its own transaction)."""

    _catch_up_on_open = False

    def __init__(self, db_path: str = "memswarm.db", *, synchronous: str = "FULL",
                 view_upkeep: str = "read", **options: Any) -> None:
        self.db_path = db_path
        _open_with_view(self, SQLEventLog(f"sqlite:///{db_path}", synchronous=synchronous),
                        view_upkeep, options)


class PostgresSharedMemory(_KeptViewMemory):
    """A PostgreSQL log at ``url`` (``postgresql+psycopg://...``, tables named
    ``table_prefix...``) and its SQL view in the same database: one shared view for every
    machine that opens it, without Redis, folded as :class:`SQLiteSharedMemory`'s is."""

    _catch_up_on_open = False

    def __init__(self, url: str, *, table_prefix: str = "memswarm_", view_upkeep: str = "read",
                 **options: Any) -> None:
        self.url = url
        _open_with_view(self, SQLEventLog(url, table_prefix=table_prefix), view_upkeep,
                        options)


class GCSSharedMemory(SharedMemory):
    """A log in a Google Cloud Storage bucket (under ``prefix``) with the in-memory read model;
    as the persistent side of ``HybridMemory`` any read model projects from it."""

    _catch_up_on_open = False

    def __init__(self, bucket: str, prefix: str = "memswarm/", client: Any = None,
                 **options: Any) -> None:
        from .log.gcs import GCSEventLog

        super().__init__(GCSEventLog(bucket, prefix, client), open_read_model("memory://"),
                         **options)


class _Ephemeral(SharedMemory):
    """A memory whose view, without a log, is a private one of its own (dropped on close),
    and which names the shared view it gives to a :class:`HybridMemory`."""

    _catch_up_on_open = False

    def __init__(self, log: EventLog | str | None, view: ReadModel,
                 shared: Callable[[], ReadModel], **options: Any) -> None:
        self._private = log is None
        self._shared = shared
        super().__init__(_event_log(log), view, **options)

    def lend_read_model(self) -> ReadModel:
        if not self._private:
            return self.read_model
        self.read_model.drop()
        self.read_model.close()
        return self._shared()

    def close(self) -> None:
        if self._private:
            self.read_model.drop()
        super().close()


def _event_log(log: EventLog | str | None) -> EventLog:
    """An :class:`EventLog` given, or opened by URL; an in-process one for ``None``."""
    if log is None:
        return open_log("memory://")
    return open_log(log) if isinstance(log, str) else log


class ChromaSharedMemory(_Ephemeral):
    """Memories in a Chroma collection, searchable by meaning.

    ``client`` defaults to ``chromadb.PersistentClient(path)``; ``embedding_function`` to the
    offline all-MiniLM-L6-v2 (any callable ``texts -> vectors`` works; ``model_id`` names it
    for the vector cache in ``path``). With ``log`` (an :class:`EventLog` or a log URL) the
    collection is that log's view. Without it the memory is ephemeral: an in-process log and a
    private collection, dropped on close; as the cache side of
    ``HybridMemory(ChromaSharedMemory(...), SQLiteSharedMemory(...))`` it gives the collection
    named ``collection`` itself, kept in step with the persistent log.
    """

    def __init__(self, path: str = "memswarm-chroma", *, client: Any = None,
                 embedding_function: Any = None, model_id: str | None = None,
                 collection: str = "memswarm", log: EventLog | str | None = None,
                 **options: Any) -> None:
        from projections.chroma_open import open_chroma

        view = open_chroma(path, client=client, embedding_function=embedding_function,
                           model_id=model_id, collection=collection, private=log is None)
        self.collection = collection

        def shared() -> ReadModel:
            return open_chroma(path, client=view.client, embedding_function=embedding_function,
                               model_id=model_id, collection=collection)

        super().__init__(log, view, shared, **options)


class RedisSharedMemory(_Ephemeral):
    """A view in Redis at ``url`` (keys under ``prefix``) of ``log``: an :class:`EventLog` or a
    log URL (``sqlite:///swarm.db``, ``gs://bucket/prefix``, any SQLAlchemy URL). Every process
    that names the same log, URL and prefix shares one view.

    Without ``log`` the memory is ephemeral, like :class:`InMemorySharedMemory`: an in-process
    log, and a view under a private prefix of its own that :meth:`close` deletes (and that
    expires if the process dies). As the cache side of
    ``HybridMemory(RedisSharedMemory(url, prefix=...), SQLiteSharedMemory(...))`` it gives the
    view under ``prefix`` itself, shared with every process using the same log.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "memswarm",
                 log: EventLog | str | None = None, **options: Any) -> None:
        from projections.redis import EPHEMERAL_TTL

        self.url = url
        self.prefix = check_id(prefix, "prefix")
        if log is None:
            view = open_read_model(url, prefix=f"{prefix}.local.{new_id()}",
                                   expire_after=EPHEMERAL_TTL)
        else:
            view = open_read_model(url, prefix=prefix)
        super().__init__(log, view, lambda: open_read_model(url, prefix=prefix), **options)


class HybridMemory(SharedMemory):
    """The ``persistent`` memory's log with the ``cache`` memory's read model. Neither has
    replayed anything (a memory catches its view up on its first read), so nothing is read
    twice; ``persistent``'s own view and ``cache``'s own log are closed."""

    def __init__(self, cache: SharedMemory, persistent: SharedMemory, **options: Any) -> None:
        view = cache.lend_read_model()
        if isinstance(cache.log, InMemoryEventLog) and view.followed_log() == cache.log.identity():
            view.clear()  # a view of the cache's own in-process log: no one else reads it
        log = persistent.lend_log()
        if cache.log is not log:
            cache.log.close()
        if persistent.read_model is not view:
            persistent.read_model.close()
        super().__init__(log, view, **options)
