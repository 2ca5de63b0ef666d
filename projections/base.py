"""The :class:`ReadModel` interface: where projected memories live and are queried.

Capabilities beyond it are typed, never looked up by name: a model that searches by meaning is
a :class:`SearchableReadModel`; one that can hold the projectors' lease itself (in its server)
is a :class:`LeaseProvider`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from memswarm_es.errors import CheckpointConflictError, NotSupportedError
from memswarm_es.events import Event, EventType
from memswarm_es.log.base import EventLog
from memswarm_es.namespaces import Namespace
from memswarm_es.scopes import Scope
from memswarm_es.waiting import wait_until, wait_until_async

from .fold import Change, MembershipChange, MemoryEntry, changes, membership_changes
from .keys import NamespaceQuery, Query
from .signal import Signal

logger = logging.getLogger(__name__)

#: Longest pause between two looks at the checkpoint while waiting, by default.
POLL_INTERVAL = 0.05


class ReadModel(ABC):
    """Memories folded from a log, with the position of the last event applied (the checkpoint).

    Every query takes a ``reader``: ``None`` for the operator, who sees every memory, or an
    agent id, who sees only the memories whose ``readable_by`` names it, ``*`` or a group it
    belongs to now. The model holds the memberships itself (folded from the log like the
    memories) and filters inside its own storage, so an agent's read costs what its answer
    costs, never a fetch of everything.

    A backend implements the storage half (``checkpoint``, ``get_many``, ``commit``, ``clear``
    and the queries); :meth:`apply` is the same for all: fold the batch with the pure fold and
    commit the changes together with the new checkpoint, in one atomic step.

    Waiting for the checkpoint (:meth:`wait`, :meth:`wait_async`) and the ``*_async`` twins of
    the queries are shared too; a backend with a native async client overrides the twins.
    """

    @property
    def poll_interval(self) -> float:
        """Longest pause between two looks at the checkpoint while waiting (commits made
        through this object wake waiters at once; commits made elsewhere are seen by looking)."""
        return POLL_INTERVAL

    @abstractmethod
    def checkpoint(self) -> int:
        """Position of the last event applied (0 when empty)."""

    def checkpoint_and_hash(self) -> tuple[int, bytes | None]:
        """The checkpoint, and the hash of the event at it as the model recorded it with the
        commit that reached it: a projector finding another event there (the log was put back
        from a copy of another history) rebuilds the view. ``None`` where the model records
        none (empty, a model that keeps none, or one committed without its events or by a
        version that did not record it): then nothing is compared."""
        return self.checkpoint(), None

    @abstractmethod
    def get_many(self, memory_ids: Iterable[str],
                 reader: str | None = None) -> dict[str, MemoryEntry]:
        """The live entries among ``memory_ids`` that ``reader`` may read."""

    @abstractmethod
    def members(self, group_id: str) -> dict[str, bool]:
        """The current members of ``group_id``, each with whether it is an admin there."""

    @abstractmethod
    def groups_of(self, agent_id: str) -> dict[str, bool]:
        """The groups ``agent_id`` belongs to now, each with whether it is an admin there."""

    @abstractmethod
    def commit(self, changes: Sequence[Change], expected_checkpoint: int, checkpoint: int,
               events: Sequence[Event] = (),
               memberships: Sequence[MembershipChange] = ()) -> None:
        """Apply ``changes`` and ``memberships`` and set the checkpoint atomically, if it is
        still ``expected``, recording :attr:`log_id` (when set) as the log the model follows.

        ``events`` are the events the changes were folded from, for a model that keeps more
        than the net change (Chroma takes the vectors that writes carry, and erases what the
        batch forgets); :meth:`apply` passes them.

        Raises :class:`CheckpointConflictError` (and changes nothing) if the checkpoint moved,
        and :class:`LogMismatchError` (changing nothing) if the model records another log.
        """

    #: True if :meth:`commit_sender` sends commits that apply while this process goes on (to a
    #: server): the projector then folds each batch while the one before it is applied.
    sends_commits = False

    @contextlib.contextmanager
    def commit_sender(self) -> Iterator[Callable[..., Callable[[], None]]]:
        """A sender of commits: ``send(changes, expected_checkpoint, checkpoint, events,
        memberships)`` starts one (as :meth:`commit` would apply it) and returns what waits
        for it, raising what :meth:`commit` raises. The commits sent are applied in the
        order sent; waiting for one waits for those before it. By default each commit is
        applied when sent."""
        def send(*commit: Any) -> Callable[[], None]:
            self.commit(*commit)
            return _done

        yield send

    @abstractmethod
    def clear(self) -> None:
        """Drop every entry and membership, the recorded log identity, and reset the
        checkpoint to 0."""

    def drop(self) -> None:
        """Delete everything the model holds, its bookkeeping included; the default (a model
        that keeps nothing beside its view) clears it."""
        self.clear()

    # --- which log this is the view of ----------------------------------------------------------

    @property
    def log_id(self) -> str | None:
        """The identity of the log this object projects (set by :meth:`follow`)."""
        return self.__dict__.get("_log_id")

    def follow(self, log_id: str) -> None:
        """Project the log with identity ``log_id`` from now on (a projector calls this)."""
        self.__dict__["_log_id"] = log_id

    def followed_log(self) -> str | None:
        """The identity of the log whose view the model holds, as recorded in it; ``None``
        while it records none (empty, or made before models recorded one)."""
        return None

    def known_checkpoint(self) -> int:
        """A position this object has seen the model apply in a committed transaction of its
        own, without asking its storage (0: none known); a projector asked to reach no
        further has nothing to do. Only a view kept inside its log's transactions knows one
        (:class:`~projections.sql.SQLReadModel`)."""
        return 0

    def fold_in_store(self, log: EventLog, checkpoint: int) -> int | None:
        """Catch up with ``log`` from ``checkpoint`` (the model's, as the projector just read
        it) by the model's own means, where it has better ones than applying the batches a
        projector reads (a view in the log's own database reads the events inside its
        transactions); the checkpoint reached, or ``None`` (the default): the projector
        applies batches."""
        return None

    def in_process(self) -> bool:
        """True if the model lives in this process's memory, so that nothing but this
        process changes it."""
        return False

    def stored_with(self, log: EventLog) -> bool:
        """True if the model lives in ``log``'s own store, so that whatever changes it also
        changes the log's :meth:`~memswarm_es.log.base.EventLog.change_stamp`."""
        return False

    def check_vector(self, vector: Sequence[float]) -> None:
        """Raise :class:`InvalidValueError` if the model could not hold a memory carrying its
        own ``vector`` (a model that holds no vectors accepts any)."""

    def current(self, memory_ids: Iterable[str]) -> dict[str, MemoryEntry]:
        """The live entries among ``memory_ids`` as a projector folds against them: like
        :meth:`get_many`, but never waiting for a build in progress (the projector is the one
        building)."""
        return self.get_many(memory_ids)

    # --- rebuilding without serving a partial view -----------------------------------------
    #
    # A rebuild (replay, taking over the view of another log, a checkpoint ahead of the log)
    # asks the model for a staging twin, projects the log into it while readers keep reading
    # the old view, and then switches to it in one atomic step. A model that cannot hold two
    # views returns no twin: it is cleared and rebuilt in place, marked as rebuilding. A view
    # built from nothing (new, or after it lost its data) is marked too, so that its readers
    # wait for the build instead of being served part of it.

    def staging(self) -> ReadModel | None:
        """An empty twin that a rebuild fills beside this model while readers keep reading
        this one; ``None`` if the model cannot hold two views."""
        return None

    def switch_to(self, staged: ReadModel, *, force: bool = False) -> bool:
        """Serve ``staged`` (made by :meth:`staging` and caught up) instead of the current view,
        atomically: a reader sees the old view or the new one, never a mix. Returns False,
        changing nothing, if this model's checkpoint is ahead of the staged one (catch the
        twin up further and switch again); raises :class:`LogMismatchError` if this model
        follows another log than the twin. ``force`` switches regardless (taking over the view
        of another log, or one ahead of the log). The old view is deleted."""
        raise NotImplementedError(f"{type(self).__name__} makes no staging twin")

    def mark_rebuilding(self, target: int) -> None:
        """Tell readers that the view is being built from nothing up to ``target``: their reads
        wait until a commit reaches it (the mark goes then, or on :meth:`clear`). Models whose
        readers all project inline, in one process, need not record it."""

    @abstractmethod
    def read_scope(self, scope: Scope, reader: str | None = None) -> list[MemoryEntry]:
        """Live entries inside ``scope`` that ``reader`` may read, ordered by position."""

    def get(self, memory_id: str, reader: str | None = None) -> MemoryEntry | None:
        return self.get_many([memory_id], reader).get(memory_id)

    # --- keys and namespaces (see projections.keys) ------------------------------------------

    def get_by_key(self, namespace: Namespace, key: str,
                   reader: str | None = None) -> MemoryEntry | None:
        """The live memory holding ``key`` in ``namespace`` (see
        :func:`~projections.keys.key_holder`), if ``reader`` may read it; found through an
        index, never a scan."""
        raise NotSupportedError(f"{type(self).__name__} does not index keys")

    def read_namespace(self, scope: Scope, prefix: Namespace, reader: str | None = None,
                       first: int | None = None) -> list[MemoryEntry]:
        """Like :meth:`read_scope`, only the memories whose namespace is ``prefix`` or lies
        below it, found through an index of namespaces; at most the ``first`` of them (in
        position order), if given."""
        raise NotSupportedError(f"{type(self).__name__} does not index namespaces")

    def namespaces_held(self, prefix: Namespace, reader: str | None = None) -> set[Namespace]:
        """The namespaces at or below ``prefix`` that hold a live memory ``reader`` may read."""
        raise NotSupportedError(f"{type(self).__name__} does not index namespaces")

    def query(self, scope: Scope, query: Query, reader: str | None = None) -> list[MemoryEntry]:
        """The answer to ``query`` (namespace prefix, value filter, order, page) inside
        ``scope``, as ``reader`` sees it."""
        if query.plain():
            return self.read_scope(scope, reader)
        first = None if query.conditions or query.order_by or query.limit is None \
            else query.offset + query.limit  # the page is a head of the answer: read no more
        return query.answer(self.read_namespace(scope, query.prefix, reader, first))

    def list_namespaces(self, query: NamespaceQuery,
                        reader: str | None = None) -> list[Namespace]:
        """The namespaces holding live memories ``reader`` may read that ``query`` asks for."""
        return query.answer(self.namespaces_held(query.fixed_prefix, reader))

    def apply(self, events: Sequence[Event]) -> int:
        """Apply the events after the checkpoint (they must follow it without a gap).

        Returns the new checkpoint. Events at or before the checkpoint are skipped, so applying
        a batch twice has the effect of applying it once. The whole step (checkpoint, fold,
        commit) runs inside :meth:`applying`.
        """
        with self.applying():
            start = self.checkpoint()
            fresh = following(events, start)
            if not fresh:
                return start
            batch = folded(self.current(existing(fresh)), fresh)
            self.commit(batch, start, fresh[-1].position, fresh, membership_changes(fresh))
        self.changed.notify()
        return fresh[-1].position

    def applying(self) -> contextlib.AbstractContextManager[object]:
        """What :meth:`apply` holds while it reads the checkpoint, folds and commits; nothing
        by default (the commit checks the checkpoint). A model without compare-and-set makes
        its projectors take turns here."""
        return contextlib.nullcontext()

    # --- waiting -------------------------------------------------------------------------------

    @property
    def changed(self) -> Signal:
        """Bumped after every commit through this object (and by backends that hear of others)."""
        signal = self.__dict__.get("_changed")
        if signal is None:  # made on first use, so that subclasses need not call __init__
            signal = self.__dict__.setdefault("_changed", Signal())
        return signal

    def wait(self, after: int, timeout: float) -> bool:
        """Block until the checkpoint is past ``after`` or ``timeout`` passes; True if it is.
        A pause ends early when :attr:`changed` moves on after the look before it."""
        signal = self.changed
        seen = signal.count

        def ready() -> bool:
            nonlocal seen
            seen = signal.count  # before looking, so no change after the look is missed
            return self.checkpoint() > after

        return wait_until(ready, timeout, lambda delay: signal.wait(seen, delay),
                          longest=self.poll_interval)

    async def wait_async(self, after: int, timeout: float) -> bool:
        """Like :meth:`wait`, without blocking the event loop."""
        signal = self.changed
        seen = signal.count

        async def ready() -> bool:
            nonlocal seen
            seen = signal.count
            return await self.checkpoint_async() > after

        return await wait_until_async(ready, timeout,
                                      lambda delay: signal.wait_async(seen, delay),
                                      longest=self.poll_interval)

    # --- async twins of the queries (in a worker thread unless a backend has better) -------

    async def checkpoint_async(self) -> int:
        return await asyncio.to_thread(self.checkpoint)

    async def get_many_async(self, memory_ids: Iterable[str],
                             reader: str | None = None) -> dict[str, MemoryEntry]:
        return await asyncio.to_thread(self.get_many, list(memory_ids), reader)

    async def read_scope_async(self, scope: Scope,
                               reader: str | None = None) -> list[MemoryEntry]:
        return await asyncio.to_thread(self.read_scope, scope, reader)

    async def members_async(self, group_id: str) -> dict[str, bool]:
        return await asyncio.to_thread(self.members, group_id)

    async def aclose(self) -> None:
        """Release resources bound to the running event loop; the default holds none."""

    def close(self) -> None:
        """Release resources; the default holds none."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A memory found by search, with its distance to the query (smaller is closer)."""

    entry: MemoryEntry
    distance: float


class SearchableReadModel(ReadModel):
    """A read model that also finds memories by meaning."""

    @abstractmethod
    def search(self, query: str, scope: Scope, k: int = 10,
               where: Mapping[str, Any] | None = None,
               reader: str | None = None) -> list[SearchHit]:
        """The ``k`` live memories inside ``scope`` (and matching ``where`` on their metadata)
        that ``reader`` may read, closest to ``query``, closest first: the true top ``k`` among
        those, never fewer when ``k`` exist. Raises :class:`InvalidInputError` for an empty
        query, a ``k`` below 1 or a filter it cannot read."""


class Lease(Protocol):
    """Who may apply to a read model; held by one owner at a time for ``ttl`` seconds."""

    ttl: float

    def acquire(self, owner: str) -> bool:
        """Take the lease if free, or extend it if ``owner`` holds it; True if held."""

    def release(self, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""

    def holder(self) -> str | None:
        """Who holds the lease now (``None``: nobody)."""


@runtime_checkable
class LeaseProvider(Protocol):
    """A read model that holds its projectors' lease itself (e.g. in its server), so that
    runners in several processes take turns."""

    def lease(self, ttl: float = 10.0) -> Lease:
        """A lease on this model that expires ``ttl`` seconds after its last renewal."""


def following(events: Sequence[Event], checkpoint: int) -> list[Event]:
    """The events of a batch after ``checkpoint``, which must follow it without a gap: else
    the checkpoint moved back (the model was cleared or lost its data) or ahead of the batch,
    and :class:`CheckpointConflictError` sends the caller to look at it again."""
    fresh = [e for e in events if e.position > checkpoint]
    if fresh and fresh[0].position != checkpoint + 1:
        raise CheckpointConflictError(fresh[0].position - 1, checkpoint)
    return fresh


def link_of(events: Sequence[Event], checkpoint: int) -> bytes | None:
    """The hash a commit of ``events`` reaching ``checkpoint`` records for it (see
    :meth:`ReadModel.checkpoint_and_hash`): its last event's, if that one is at the
    checkpoint; else ``None``."""
    if events and events[-1].position == checkpoint:
        return events[-1].hash
    return None


def link_text(position: int, link: bytes | None) -> str:
    """The hash a commit reaching ``position`` records (see :func:`link_of`) as a model that
    stores text keeps it: ``position:hex``, or ``""`` when it is not known. The position goes
    with it, since a commit by a version that does not record it leaves it as it was."""
    return "" if link is None else f"{position}:{link.hex()}"


def link_at(position: int, found: object) -> bytes | None:
    """The hash that ``found`` (a :func:`link_text`, as text or bytes) records for
    ``position``; ``None`` if it records none, or another position's."""
    text = found.decode("ascii", "replace") if isinstance(found, bytes) else found
    if not isinstance(text, str):
        return None
    at, _, link = text.partition(":")
    if at != str(position):
        return None
    try:
        return bytes.fromhex(link)
    except ValueError:
        return None


def _done() -> None:
    """Waits for a commit applied already."""


def folded(before: Mapping[str, MemoryEntry], events: Sequence[Event]) -> list[Change]:
    """The changes ``events`` make to the entries ``before`` them (see
    :func:`~projections.fold.changes`), each memory an event of which cannot be read logged."""
    batch = changes(before, events)
    for change in batch:
        if change.after is not None and change.after.damaged:
            logger.warning("event at position %d cannot be read (%s); memory %r reads "
                           "as damaged", change.after.last_position,
                           change.after.damaged, change.memory_id)
    return batch


def existing(events: Sequence[Event]) -> list[str]:
    """The memories a batch touches that may exist before it: not those it starts by writing
    (a write is a memory's version 1, and a log holds each version of a memory once, in
    increasing order, so nothing of that memory comes before it)."""
    first: dict[str, str] = {}
    for e in events:
        if e.memory_id is not None:
            first.setdefault(e.memory_id, e.type)
    return [m for m, type in first.items() if type != EventType.MEMORY_WRITTEN]
