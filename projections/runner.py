"""The projector runner: a long-running projector that catches a read model up from its
checkpoint, then follows the log live.

Several runners may be started for one read model (in several processes or on several
machines); a lease lets one of them apply at a time and expires when its holder stops renewing
it, so another takes over after a crash. The lease only saves work: exactness comes from the
read model's checkpoint check on every commit, so even a holder that lost its lease while it
was paused cannot apply a batch twice or skip one.

The runner also notices when the read model lost its data (its checkpoint went back, as after
FLUSHDB or a restart without persistence; readers wait for the rebuild) or is ahead of the log
(rebuilt beside the old view, which serves until the switch), and rebuilds it from the log,
reporting progress. It never touches the view of another log: it stops, with :attr:`error`
set, as it does on a log it cannot read (garbage, a broken chain), so that a supervisor sees
the failure instead of a runner that quietly does nothing.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import uuid
from dataclasses import dataclass

from memswarm_es.errors import (
    CorruptLogError,
    IntegrityError,
    LogMismatchError,
    StorageError,
)
from memswarm_es.log.base import EventLog
from memswarm_es.telemetry import rebuilt, watch
from memswarm_es.telemetry.logs import event
from memswarm_es.waiting import wait_until

from .base import Lease, LeaseProvider, ReadModel
from .projector import Progress, Projector

logger = logging.getLogger(__name__)

#: The first and the longest pause before trying again after an outage.
FIRST_RETRY, LONGEST_RETRY = 0.05, 2.0


class LocalLease:
    """A lease within this process, for read models that have no server to hold one."""

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._holder: str | None = None
        self._lock = threading.Lock()

    def acquire(self, owner: str) -> bool:
        with self._lock:
            if self._holder in (None, owner):
                self._holder = owner
                return True
            return False

    def release(self, owner: str) -> None:
        with self._lock:
            if self._holder == owner:
                self._holder = None

    def holder(self) -> str | None:
        return self._holder


@dataclass(frozen=True, slots=True)
class RunnerStatus:
    """What a runner reports: whether it holds the lease, and how far behind the model is."""

    holding: bool
    checkpoint: int
    head: int
    rebuilds: int

    @property
    def lag(self) -> int:
        """Events in the log that the read model has not applied yet."""
        return max(self.head - self.checkpoint, 0)


class _LeaseLost(Exception):
    pass


# Errors that waiting does not cure: the runner stops on them instead of retrying.
FATAL = (LogMismatchError, CorruptLogError, IntegrityError)


class ProjectorRunner:
    """Runs a :class:`Projector` for ``read_model`` until stopped: :meth:`run` in the calling
    thread, or :meth:`start` in a thread of its own.

    ``lease`` defaults to the read model's own if it is a :class:`LeaseProvider` (e.g.
    Redis), else a lease within this process. ``progress`` is called with ``(position, head)`` after
    each batch applied.
    """

    def __init__(self, event_log: EventLog, read_model: ReadModel, *,
                 lease: Lease | None = None, lease_ttl: float = 10.0, batch_size: int = 1000,
                 owner: str | None = None, progress: Progress | None = None) -> None:
        if lease is None:
            lease = (read_model.lease(lease_ttl) if isinstance(read_model, LeaseProvider)
                     else LocalLease(lease_ttl))
        self.lease: Lease = lease
        self.log = event_log
        self.read_model = read_model
        self.projector = Projector(event_log, read_model, batch_size,
                                   on_rebuild=self._rebuilding)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.progress = progress
        self.holding = False
        self.rebuilds = 0
        self._last_checkpoint = 0
        self._state = ""  # what was last logged: "standing by", "lagging", "caught up"
        self.error: BaseException | None = None  # what stopped :meth:`run`, if not stop()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        watch(self)  # its lease and lag, in the metrics

    # --- one round -----------------------------------------------------------------------------

    def step(self) -> int | None:
        """Take or renew the lease and, holding it, apply everything in the log (rebuilding
        the read model first if it lost its data or is ahead of the log).

        Returns the checkpoint reached, or ``None`` when another runner holds the lease.
        """
        self.holding = self.lease.acquire(self.owner)
        if not self.holding:
            self._last_checkpoint = 0  # another runner may rebuild meanwhile: not a data loss
            self._now("standing by", "another runner holds the lease")
            return None
        self.projector.check_log()  # never clear, nor add to, the view of another log
        checkpoint = self.read_model.checkpoint()
        head = self.log.head()
        if self._state in ("", "standing by"):
            logger.info("%s: holding the lease", self.owner,
                        extra=event("projection.lease_acquired", owner=self.owner))
        if head - checkpoint > self.projector.batch_size:
            self._now("lagging", f"{head - checkpoint} events behind (checkpoint {checkpoint}, "
                                 f"head {head})", checkpoint=checkpoint, head=head)
        try:
            if checkpoint > head:
                self._rebuilding(f"its checkpoint {checkpoint} is ahead of the log (head {head})")
                checkpoint = self.projector.rebuild(progress=self._applied)
            else:
                self._check_not_lost(checkpoint)
                checkpoint = self.projector.catch_up(progress=self._applied)
        except _LeaseLost:
            logger.warning("%s: lost the lease to %s; standing by", self.owner,
                           self.lease.holder(), extra=event("projection.lease_lost",
                                                            owner=self.owner))
            self.holding = False
            self._state = "standing by"
            return None
        self._last_checkpoint = checkpoint
        self._now("caught up", f"at position {checkpoint}", checkpoint=checkpoint)
        return checkpoint

    def _now(self, state: str, detail: str, **fields: object) -> None:
        """Log that the runner is now in ``state``, only if it was not already: a line when
        something changes, not on every poll (event ``projection.<state>``, with ``fields``)."""
        if state != self._state:
            self._state = state
            logger.info("%s: %s: %s", self.owner, state, detail, extra=event(
                f"projection.{state.replace(' ', '_')}", owner=self.owner, **fields))

    def _rebuilding(self, why: str) -> None:
        """Count and log a rebuild (its progress starts from nothing: no data was lost)."""
        self.rebuilds += 1
        self._last_checkpoint = 0
        logger.warning("%s: rebuilding the read model from the log: %s", self.owner, why,
                       extra=event("projection.rebuilding", owner=self.owner, reason=why))

    def _check_not_lost(self, checkpoint: int) -> None:
        """A checkpoint below the last one seen means the read model lost data (FLUSHDB, a
        restart without persistence, a clear): catching up from it is a rebuild."""
        if checkpoint < self._last_checkpoint:
            rebuilt(self.read_model)  # (one ahead of the log counts in the projector)
            self._rebuilding(f"its checkpoint went back from {self._last_checkpoint} to "
                             f"{checkpoint} (its data was lost or cleared)")
        self._last_checkpoint = checkpoint

    def _applied(self, position: int, head: int) -> None:
        self._check_not_lost(position)
        if self.progress is not None:
            self.progress(position, head)
        if not self.lease.acquire(self.owner):  # renew between batches
            raise _LeaseLost

    def status(self) -> RunnerStatus:
        """The read model's checkpoint and the log's head now (lag = head - checkpoint)."""
        checkpoint = self.read_model.checkpoint()
        return RunnerStatus(self.holding, checkpoint, self.log.head(), self.rebuilds)

    # --- running -------------------------------------------------------------------------------

    def run(self) -> None:
        """Follow the log until :meth:`stop`; outages of the log or the read model are waited
        out (with backoff), and the lease is released on the way out.

        Any other error (:data:`FATAL` ones, or whatever the log or the model raise that is
        not an outage) ends the run: it is kept in :attr:`error` and raised again.
        """
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
            logger.error("%s: projector stopped: %s: %s", self.owner, type(exc).__name__, exc,
                         extra=event("projection.stopped", owner=self.owner, error=repr(exc)))
            raise

    def _run(self) -> None:
        try:
            while not self._stop.is_set():  # each outage waited out with a backoff of its own
                wait_until(self._round, math.inf, self._stop.wait, first=FIRST_RETRY,
                           longest=LONGEST_RETRY)
        finally:
            self._release()

    def _round(self) -> bool:
        """One :meth:`step`, then the wait for more to do; False after an outage of the log or
        the read model (the caller pauses, then tries again), True otherwise or once stopped."""
        try:
            checkpoint = self.step()
        except FATAL:
            raise
        except StorageError as exc:
            logger.warning("%s: %s; retrying", self.owner, exc,
                           extra=event("projection.retrying", owner=self.owner, error=repr(exc)))
            self.holding = False
            return self._stop.is_set()
        renew_every = self.lease.ttl / 3
        if checkpoint is None:
            self._stop.wait(renew_every)
        else:  # look again soon: a lost or cleared read model is noticed by looking
            self._wait_for_events(checkpoint, min(renew_every, 0.5))
        return True

    def _wait_for_events(self, after: int, timeout: float) -> None:
        """Wait for events after ``after``, in short slices so that :meth:`stop` is prompt."""
        arrived = False

        def ready() -> bool:
            return arrived or self._stop.is_set()

        def pause(delay: float) -> None:
            nonlocal arrived
            arrived = self.log.wait(after, delay)

        wait_until(ready, timeout, pause, first=0.05, longest=0.05)

    def _release(self) -> None:
        try:
            self.lease.release(self.owner)
        except StorageError as exc:
            logger.warning("%s: could not release the lease: %s", self.owner, exc,
                           extra=event("projection.lease_release_failed", owner=self.owner,
                                       error=repr(exc)))
        self.holding = False

    def start(self) -> threading.Thread:
        """Run in a daemon thread; :meth:`stop` ends it."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, daemon=True,
                                        name=f"memswarm-projector-{self.owner}")
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
