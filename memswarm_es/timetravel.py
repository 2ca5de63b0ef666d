"""Time travel: the memory as it stood at a position or a time, folded from the nearest snapshot."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from projections.fold import MemoryEntry, View, fold_into, select

from .access import Gate
from .errors import InvalidInputError, MemoryNotFoundError, PermissionDeniedError
from .events import to_micros
from .log.base import EventFilter, EventLog, Verification
from .scopes import Scope, check_id
from .snapshots import SnapshotStore

logger = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_EVERY = 10_000


def _by_position(entry: MemoryEntry) -> int:
    return entry.position


class PastMemory:
    """A read-only view of the memory as it stood after the event at ``position``.

    Made at no cost: each query folds what it needs. A scoped read folds only that scope's
    events up to ``position`` (found by the log's scope index); :meth:`get` only that memory's;
    :meth:`members` only that group's; an unscoped read folds the whole view once, from the
    nearest snapshot. Seen by an agent (:meth:`seen_by`), it holds only the memories the agent
    may read *now*: access is decided by today's permissions and memberships, also in the past.
    """

    def __init__(self, machine: TimeMachine, position: int, recorded_at: datetime | None,
                 agent: Gate | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self._machine = machine
        self._agent = agent
        self._progress = progress
        self._view: View | None = None
        self.position = position
        self.recorded_at = recorded_at  # when the event at ``position`` was recorded

    def seen_by(self, agent: Gate) -> PastMemory:
        """The same past, as ``agent`` may see it now."""
        past = PastMemory(self._machine, self.position, self.recorded_at, agent, self._progress)
        past._view = self._view
        return past

    def view(self) -> View:
        """The whole view at :attr:`position` (folded on first use, then kept)."""
        if self._view is None:
            self._view = self._machine.view_at(self.position, self._progress)
        return self._view

    def read_scope(self, agent_id: str | None = None, group_id: str | None = None,
                   context_id: str | None = None, **unknown: object) -> list[MemoryEntry]:
        """The memories inside every scope given (AND), ordered by position, as they were."""
        scope = Scope.from_query(agent_id, group_id, context_id, unknown)
        found = None if self._view is not None or scope.is_empty() else \
            self._machine.scoped(scope, self.position, self._progress)
        if found is None:
            found = select(self.view().entries.values(), scope)
        if self._agent is None:
            return found
        allowed = self._agent.readable(e.memory_id for e in found)
        return [e for e in found if e.memory_id in allowed]

    def get(self, memory_id: str) -> MemoryEntry:
        check_id(memory_id, "memory_id")
        if self._view is not None:
            entry = self._view.entries.get(memory_id)
        else:
            events = self._machine.log.query(EventFilter(memory_id=memory_id,
                                                         until_position=self.position))
            entry = fold_into(View(), events).entries.get(memory_id)
        if entry is None or (self._agent is not None and not self._agent.readable([memory_id])):
            raise MemoryNotFoundError(memory_id)
        return entry

    def members(self, group_id: str) -> dict[str, bool]:
        """The members of ``group_id`` as they were (each with whether it was an admin). An
        agent sees those of the groups it belongs to now."""
        check_id(group_id, "group_id")
        if self._agent is not None and group_id not in self._agent.groups():
            raise PermissionDeniedError(self._agent.agent_id, "see the members of",
                                        f"group {group_id!r}")
        if self._view is not None:
            return dict(self._view.members.get(group_id, {}))
        return self._machine.members(group_id, self.position)


@dataclass(frozen=True, slots=True)
class SnapshotVerification:
    """The outcome of :meth:`TimeMachine.verify_snapshots`."""

    ok: bool
    checked: int  # snapshots that equal the fold of the log at their position
    bad: tuple[tuple[int, str], ...] = ()  # (position, why) of the others, now discarded

    @property
    def position(self) -> int | None:
        """The first bad snapshot's position, if any."""
        return self.bad[0][0] if self.bad else None


class TimeMachine:
    """Builds :class:`PastMemory` views, taking a snapshot every ``every`` events on the way, so
    that later views fold at most ``every`` events after the nearest snapshot."""

    def __init__(self, event_log: EventLog, store: SnapshotStore,
                 every: int = DEFAULT_SNAPSHOT_EVERY, batch_size: int = 5000) -> None:
        if every < 1:
            raise ValueError("snapshot interval must be at least 1")
        self.log = event_log
        self.store = store
        self.every = every
        self.batch_size = batch_size

    def position_at(self, moment: datetime) -> int:
        if moment.tzinfo is None:
            raise InvalidInputError("time must be timezone-aware (UTC)")
        return self.log.position_at(to_micros(moment))

    def at(self, position: int | None = None, time: datetime | None = None,
           progress: Callable[[int, int], None] | None = None) -> PastMemory:
        """The memory after ``position``, or after the last event recorded at or before
        ``time``; exactly one of them."""
        if (position is None) == (time is None):
            raise InvalidInputError("give exactly one of position and time")
        if time is not None:
            position = self.position_at(time)
        assert position is not None
        if not isinstance(position, int) or position < 0:
            raise InvalidInputError("position must be a non-negative int")
        position = min(position, self.log.head())
        found = self.log.read(position - 1, 1) if position else []
        return PastMemory(self, position, found[0].recorded_at if found else None,
                          progress=progress)

    def scoped(self, scope: Scope, position: int,
               progress: Callable[[int, int], None] | None = None) -> list[MemoryEntry] | None:
        """The memories inside ``scope`` after ``position``, folded from that scope's events
        alone (the log finds them by its scope index), ordered by position; ``None`` when the
        whole view is the better way: the scope has more than ``every`` events up to there (a
        long history: the nearest snapshot and at most ``every`` events cost less), or a
        memory among them has events naming other scopes (only a log written by another
        program has such), so that they cannot be folded alone."""
        events = self.log.query(EventFilter(scope=scope, until_position=position),
                                limit=self.every + 1)
        if len(events) > self.every:
            return None
        if progress:
            progress(len(events), len(events))
        scopes: dict[str, Scope] = {}
        for event in events:
            if event.memory_id is not None and \
                    scopes.setdefault(event.memory_id, event.scope) != event.scope:
                return None
        # An entry comes from its write, which the query found inside ``scope``: the fold
        # holds only memories of the scope, and a sort by position is the whole select.
        return sorted(fold_into(View(), events).entries.values(), key=_by_position)

    def members(self, group_id: str, position: int) -> dict[str, bool]:
        """The members of ``group_id`` after ``position``, folded from that group's events."""
        events = self.log.query(EventFilter(scope=Scope(group_id=group_id),
                                            until_position=position))
        return fold_into(View(), events).members.get(group_id, {})

    def view_at(self, position: int,
                progress: Callable[[int, int], None] | None = None) -> View:
        """The folded view at ``position``: the nearest valid snapshot plus the events after.

        Snapshots are saved against the store's epoch taken before anything is read, so a
        forget that runs meanwhile makes the store refuse them (see :class:`SnapshotStore`)."""
        epoch = self.store.epoch()
        view = self._nearest_snapshot(position)
        start = view.position
        saving = True
        for batch in self.log.iter_events(view.position, self.batch_size, until=position):
            for event in batch:
                fold_into(view, (event,))
                if saving and event.position % self.every == 0:
                    saving = self.store.save(view, event.hash, epoch)
            if progress:
                progress(view.position - start, position - start)
        return view

    def verify_snapshots(self, progress: Callable[[int, int], None] | None = None
                         ) -> SnapshotVerification:
        """Fold the log once from the start and compare every stored snapshot with the fold at
        its position (the event hash it names and every entry). Snapshots that differ or cannot
        be read are discarded and reported, first position first."""
        stored = self.store.stored()
        bad: list[tuple[int, str]] = []
        if not stored:
            return SnapshotVerification(True, 0)
        last = stored[-1][0]
        wanted = dict(stored)
        view = View()
        for batch in self.log.iter_events(0, self.batch_size, until=last):
            for event in batch:
                fold_into(view, (event,))
                if event.position in wanted:
                    problem = self._differs(event.position, wanted.pop(event.position),
                                            event.hash, view)
                    if problem:
                        bad.append((event.position, problem))
            if progress:
                progress(view.position, last)
        bad += [(p, "no event at this position") for p in sorted(wanted)]
        for p, _ in bad:
            self.store.discard(p)
        return SnapshotVerification(not bad, len(stored) - len(bad), tuple(bad))

    def _differs(self, position: int, stored_hash: bytes, event_hash: bytes,
                 view: View) -> str | None:
        if stored_hash != event_hash:
            return "names another event hash than the log's"
        try:
            saved = self.store.load(position)
        except (ValueError, TypeError, LookupError):
            return "cannot be read"
        if (saved.position != position or saved.entries != view.entries
                or saved.members != view.members):
            return "differs from the fold of the log"
        return None

    def _nearest_snapshot(self, position: int) -> View:
        while True:
            found = self.store.nearest(position)
            if found is None:
                return View()
            at, event_hash = found
            event = self.log.read(at - 1, 1)
            if event and event[0].hash == event_hash:
                try:
                    view = self.store.load(at)
                except (ValueError, TypeError, LookupError):
                    logger.warning("snapshot at %d cannot be read; rebuilding", at)
                else:
                    if not (self.store.local and self._holds_erased(view)):
                        return view
                    logger.warning("snapshot at %d holds content forgotten since; rebuilding", at)
            else:
                logger.warning("snapshot at %d no longer matches the log; rebuilding", at)
            self.store.delete_from(at)

    def _holds_erased(self, view: View) -> bool:
        """True if an entry of ``view`` has content whose event the log has redacted since: a
        forget this store did not see (made through another store on the same log)."""
        events = self.log.read(0, view.position)
        return any(events[e.last_position - 1].payload is None
                   and (e.value is not None or e.metadata) for e in view.entries.values())

    def forget_from(self, position: int) -> int:
        """Drop the snapshots that may hold what the events from ``position`` on wrote."""
        return self.store.delete_from(position)



def verify_log(event_log: EventLog, machine: TimeMachine,
               progress: Callable[[int, int], None] | None = None) -> Verification:
    """The log's chain (:meth:`EventLog.check`), then its snapshots: a forged or stale
    snapshot is reported at its position (and discarded) as a broken event would be."""
    result = event_log.check(progress=progress)
    if not result.ok:
        return result
    snapshots = machine.verify_snapshots()
    if snapshots.ok:
        return result
    position, why = snapshots.bad[0]
    return Verification(False, result.checked, position, f"snapshot at position {position}: {why}")
