"""The projector: moves events from a log into a read model, exactly once in effect."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

from memswarm_es.errors import CheckpointConflictError, LogMismatchError
from memswarm_es.events import Event
from memswarm_es.log.base import EventLog
from memswarm_es.telemetry import apply_batch, fold_in_store, projected, rebuilt
from memswarm_es.telemetry.logs import event

from .base import ReadModel, existing, folded, following
from .fold import MemoryEntry, membership_changes

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (applied position, head)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a projector reads and folds.

    A catch-up allocates containers by the thousand per batch (events, payloads, entries,
    index slots) that a read model keeps or that reference counting frees: the collector,
    run every 700 allocations, finds no garbage among them, and its full collections walk
    every entry held (a fifth of a replay's time at 100k events, growing with the view). It
    runs again, as usual, when the catch-up returns; left alone when the application has
    disabled it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _OtherHistory(Exception):
    """The log holds another event at the read model's checkpoint than the one the model
    applied there: it was put back from a copy of another history."""


def _same_history(batches: Iterable[list[Event]], position: int,
                  link: bytes) -> Iterator[list[Event]]:
    """``batches``, the first checked, when it starts at ``position``, to start with the event
    whose hash is ``link`` (else :class:`_OtherHistory`)."""
    first = True
    for batch in batches:
        if first and batch and batch[0].position == position and batch[0].hash != link:
            raise _OtherHistory
        first = False
        yield batch


class _Sent(NamedTuple):
    """A batch's commit in flight (:meth:`Projector._send`): what waits for its answer, when
    its fold started (``perf_counter``, and ``time_ns`` for its span) and the positions it
    takes the checkpoint from and to."""

    wait: Callable[[], None]
    start: float
    started_ns: int
    before: int
    reached: int


class Projector:
    """Catches ``read_model`` up with ``event_log`` from its checkpoint, in batches.

    A read model applies each batch together with its checkpoint, so a projector that stops
    anywhere resumes where the read model says, applying nothing twice and skipping nothing.
    """

    def __init__(self, event_log: EventLog, read_model: ReadModel, batch_size: int = 1000, *,
                 on_rebuild: Callable[[str], None] | None = None) -> None:
        """``on_rebuild``: told why, when a catch-up finds the view ahead of the log or of
        another history and rebuilds it (else the projector logs a warning itself)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.log = event_log
        self.read_model = read_model
        self.batch_size = batch_size
        self.on_rebuild = on_rebuild
        self._lock = threading.Lock()
        self._log_checked = False
        # Per thread: the log's change stamp before its last catch-up, and where it reached.
        self._seen = threading.local()
        read_model.follow(event_log.identity())

    def lag(self) -> int:
        """How many events the read model is behind the log."""
        return max(self.log.head() - self.read_model.checkpoint(), 0)

    def catch_up(self, until: int | None = None, progress: Progress | None = None,
                 recorded: Sequence[Event] = ()) -> int:
        """Apply every event after the checkpoint (up to ``until``); return the checkpoint.

        ``recorded``: events this process has just appended, up to ``until``; an in-process
        model right before them applies them as they are, without reading them back.

        Several projectors may catch one read model up at once: a batch is committed only if
        the checkpoint is still the one it was folded against, and the projector that loses
        the race goes on from the checkpoint it then finds. A read model whose checkpoint is
        ahead of the log (the log was restored from an older copy), or at an event of the log
        other than the one it applied there (a copy of another history), is rebuilt beside
        the old view (:meth:`rebuild`); one that holds the view of another log is refused with
        :class:`LogMismatchError`, untouched. A view built from nothing is marked as
        rebuilding up to the head, so that its readers wait for it.
        """
        with self._lock:
            if not self._log_checked:  # once: after it, the model's commits refuse by themselves
                self.check_log()
                self._log_checked = True
            elif until is not None and self.read_model.known_checkpoint() >= until:
                return until  # a write of this process, applied in its own transaction
            if recorded and self.read_model.in_process() and self._follows(recorded[0]):
                with contextlib.suppress(CheckpointConflictError), _collector_paused():
                    return apply_batch(self.read_model, recorded, recorded[0].position - 1)
            stamp = self._stamp()
            seen = getattr(self._seen, "last", None)
            if stamp is not None and seen is not None and seen[0] == stamp \
                    and (until is None or seen[1] >= until):
                return seen[1]  # nothing committed to the log's store since: nothing to do
            reached = self._catch_up(until, progress)
            if stamp is not None and until is None:  # at the head as of the stamp
                self._seen.last = (stamp, reached)
            return reached

    def _follows(self, event: Event) -> bool:
        """True if ``event`` comes right after the model's checkpoint: at the next position,
        chained to the event the model recorded there (when it recorded one)."""
        position, link = self.read_model.checkpoint_and_hash()
        if position != event.position - 1:
            return False
        try:
            return link is None or event.expected_hash(link) == event.hash
        except (TypeError, ValueError, UnicodeError):  # a header that cannot be encoded
            return False

    def _stamp(self) -> object | None:
        """The log's change stamp, where the read model lives in the log's own store (so
        that the stamp also changes with the model: a replay, a fold by another process);
        with the model's checkpoint, where the model lives in this process (which alone
        changes it, a replay setting its checkpoint back)."""
        model = self.read_model
        if model.stored_with(self.log):
            return self.log.change_stamp()
        if model.in_process():
            stamp = self.log.change_stamp()
            return None if stamp is None else (stamp, model.checkpoint())
        return None

    def _catch_up(self, until: int | None, progress: Progress | None) -> int:
        while True:
            try:
                position, link = self.read_model.checkpoint_and_hash()
                if until is not None and position >= until:
                    return position
                if position == 0:
                    self._mark(until)
                reached = self._follow(position, until, progress, link)
            except CheckpointConflictError as exc:
                logger.debug("%s; going on from the checkpoint found", exc)
                continue
            except _OtherHistory:
                reason, why = "another history", ("the log holds another event there (it was "
                                                  "put back from a copy)")
            else:
                if reached is not None:  # (a commit refuses another log's view by itself)
                    return reached
                reason, why = "ahead of the log", f"ahead of the log (head {self.log.head()})"
            self.check_log()  # never rebuild the view of another log
            if self.on_rebuild is not None:
                self.on_rebuild(f"it is at position {position}, {why}")
            else:
                logger.warning("%s is at position %d, %s; rebuilding it from the log",
                               type(self.read_model).__name__, position, why,
                               extra=event("projection.rebuilding", checkpoint=position,
                                           reason=reason))
            return self._rebuild(progress, force=True)

    def _mark(self, until: int | None) -> None:
        head = self.log.head()
        target = head if until is None else min(until, head)
        if target > 0:
            self.read_model.mark_rebuilding(target)

    def check_log(self) -> None:
        """Raise :class:`LogMismatchError` if the read model holds the view of another log."""
        followed = self.read_model.followed_log()
        if followed is not None and followed != self.log.identity():
            raise LogMismatchError(self.log.identity(), followed)

    def _follow(self, position: int, until: int | None, progress: Progress | None,
                link: bytes | None = None) -> int | None:
        """Apply the events after ``position``; ``None`` if the log does not reach it.

        Reading starts at the event at the checkpoint itself (the read model skips it): finding
        it proves the log reaches the checkpoint, at no extra query, and finding another hash
        there than ``link`` (the one the model recorded) raises :class:`_OtherHistory`. A
        model that folds by its own means (:meth:`~projections.base.ReadModel.fold_in_store`)
        does, unless progress is reported.
        """
        if progress is None:
            with _collector_paused():
                reached = fold_in_store(self.read_model, self.log, position)
            if reached is not None:
                return reached
        head = self.log.head() if progress else 0
        found = position == 0
        batches = self.log.iter_events(max(position - 1, 0), self.batch_size, until)
        if link is not None and position > 0:
            batches = _same_history(batches, position, link)
        with _collector_paused():
            if self.read_model.sends_commits:
                return self._send(batches, position, head, progress)
            for batch in batches:
                found = True
                if batch[-1].position > position:  # not only the event at the checkpoint
                    position = apply_batch(self.read_model, batch, position)
                if progress:
                    progress(position, max(head, position))
        return position if found else None

    def _send(self, batches: Iterable[list[Event]], position: int, head: int,
              progress: Progress | None) -> int | None:
        """:meth:`_follow`'s loop for a model that sends its commits: each batch is folded
        while the one before it is applied, against the entries as that one leaves them (a
        batch folded against a commit that then fails is refused by its own checkpoint)."""
        model = self.read_model
        found = position == 0
        waiting: _Sent | None = None
        written: dict[str, MemoryEntry | None] = {}  # by the commit in flight
        with model.commit_sender() as send:
            for batch in batches:
                found = True
                fresh = following(batch, position)
                if not fresh:
                    continue
                start, started_ns = time.perf_counter(), time.time_ns()
                touched = existing(fresh)
                before = model.current([m for m in touched if m not in written])
                before.update((m, e) for m in touched if (e := written.get(m)) is not None)
                batch_changes = folded(before, fresh)
                sent = _Sent(send(batch_changes, position, fresh[-1].position, fresh,
                                  membership_changes(fresh)), start, started_ns, position,
                             fresh[-1].position)
                if waiting is not None:
                    try:
                        self._sent(waiting, head, progress)
                    except BaseException:  # the one sent after it still ends, either way
                        with contextlib.suppress(Exception):
                            self._sent(sent, head, progress)
                        raise
                waiting = sent
                written = {c.memory_id: c.after for c in batch_changes}
                position = fresh[-1].position
            if waiting is not None:
                self._sent(waiting, head, progress)
        return position if found else None

    def _sent(self, commit: _Sent, head: int, progress: Progress | None) -> None:
        """Wait for a commit :meth:`_send` sent; count, trace and report it."""
        applied = commit.reached - commit.before
        try:
            commit.wait()
        except BaseException as exc:
            projected(self.read_model, 0.0, applied, commit.started_ns, exc)
            raise
        self.read_model.changed.notify()
        projected(self.read_model, time.perf_counter() - commit.start, applied,
                  commit.started_ns)
        if progress:
            progress(commit.reached, max(head, commit.reached))

    def replay(self, progress: Progress | None = None, *, take_over: bool = False) -> int:
        """Rebuild the read model from position 0; return the checkpoint reached.

        Readers keep the old view until the new one has caught up (when the model makes a
        staging twin). A model holding the view of another log is refused with
        :class:`LogMismatchError` unless ``take_over`` (an operator's decision).
        """
        with self._lock:
            if not take_over:
                self.check_log()
            logger.info("replaying log into %s", type(self.read_model).__name__,
                        extra=event("projection.replaying"))
            return self._rebuild(progress, force=take_over)

    def rebuild(self, progress: Progress | None = None) -> int:
        """Rebuild a view whose checkpoint is ahead of the log, beside the old view."""
        with self._lock:
            self.check_log()
            return self._rebuild(progress, force=True)

    def _rebuild(self, progress: Progress | None, force: bool) -> int:
        rebuilt(self.read_model)
        staged = self.read_model.staging()
        if staged is None:  # no room for two views: rebuild in place, marked
            self.read_model.clear()
            return self._catch_up(None, progress)
        try:
            if self.read_model.checkpoint() == 0:  # no old view to serve meanwhile
                self._mark(None)
            builder = Projector(self.log, staged, self.batch_size)
            while True:
                builder.catch_up(progress=progress)
                if self.read_model.switch_to(staged, force=force):
                    break
                # The served view moved on meanwhile: catch the twin up to it, unless it is
                # ahead of the log (then the twin, which is the log's view, wins).
                force = force or self.read_model.checkpoint() > self.log.head()
        finally:
            staged.close()
        return self._catch_up(None, progress)
