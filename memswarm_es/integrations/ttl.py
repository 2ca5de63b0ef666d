"""Time to live for :class:`~memswarm_es.integrations.langgraph.MemSwarmStore`, as events.

A put with a ``ttl`` (minutes) records the item's expiry in the memory's metadata
(:data:`TTL_MINUTES` and :data:`EXPIRES_AT`, microseconds since the epoch), so the expiry is
in the log like everything else. A read that refreshes (LangGraph's ``refresh_ttl``) records
an update of that metadata; a sweep records a delete of every item whose expiry has passed.
Expired items stay readable until a sweep deletes them, as in LangGraph's ``SqliteStore``.
Refreshes and deletes name the version they saw: an item changed in between is left as the
other writer left it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from memswarm_es.agent import AgentMemory
from memswarm_es.batch import Change, Delete, Update
from memswarm_es.errors import InvalidValueError, MemSwarmError
from memswarm_es.events import now_micros
from memswarm_es.memory import SharedMemory
from projections.fold import MemoryEntry

logger = logging.getLogger(__name__)

#: The metadata of an item put with a TTL: its TTL in minutes, and when it expires.
TTL_MINUTES, EXPIRES_AT = "langgraph_ttl_minutes", "langgraph_expires_at_us"
#: Minutes between two sweeps when neither the call nor the store's TTL config says.
DEFAULT_SWEEP_MINUTES = 5.0


def expiring(metadata: Mapping[str, Any], ttl: float | None, now_us: int) -> dict[str, Any]:
    """``metadata`` with the expiry of an item put now with ``ttl`` minutes (without one,
    when ``ttl`` is ``None``)."""
    kept = {k: v for k, v in metadata.items() if k not in (TTL_MINUTES, EXPIRES_AT)}
    if ttl is None:
        return kept
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 <= ttl < _LONGEST:
        raise InvalidValueError(f"ttl must be a number of minutes from 0 to {_LONGEST:g}, "
                                f"not {ttl!r}")
    return {**kept, TTL_MINUTES: ttl, EXPIRES_AT: now_us + round(ttl * 60_000_000)}


#: The longest TTL, in minutes (about 190,000 years): an expiry is a 64-bit count of
#: microseconds.
_LONGEST = 1e11


#: A read refreshes a TTL only once this share of it has passed since the expiry was last
#: set (and at most :data:`REFRESH_SLACK_US` of it): reads in quick succession record one
#: refresh, not one each, and an item expires at most that much earlier than it would if
#: every read restarted its TTL.
REFRESH_SLACK_SHARE = 0.01
REFRESH_SLACK_US = 60_000_000


def refreshes(entries: Iterable[MemoryEntry]) -> list[Change]:
    """The updates that restart, from now, the TTL of those of ``entries`` that have one
    (once each), unless it was set within its slack (:data:`REFRESH_SLACK_SHARE`). A TTL
    that is not a number of minutes a put could give (metadata another writer set) is left
    alone."""
    having = {e.memory_id: e for e in entries if TTL_MINUTES in e.metadata}
    if not having:
        return []
    now_us = now_micros()
    return [Update(e.memory_id, metadata=expiring(e.metadata, e.metadata[TTL_MINUTES], now_us),
                   expected_version=e.version)
            for e in having.values() if _due(e.metadata, now_us)]


def _due(metadata: Mapping[str, Any], now_us: int) -> bool:
    """True if the TTL in ``metadata`` is one to refresh now: a TTL a put could give, whose
    expiry was set longer ago than its slack (or cannot be read: a refresh sets it anew)."""
    minutes, at = metadata.get(TTL_MINUTES), metadata.get(EXPIRES_AT)
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) \
            or not 0 <= minutes < _LONGEST:
        return False
    if type(at) is not int:
        return True
    ttl_us = minutes * 60_000_000
    return at - now_us < ttl_us - min(ttl_us * REFRESH_SLACK_SHARE, REFRESH_SLACK_US)


def expired(entries: Iterable[MemoryEntry], now_us: int) -> list[Change]:
    """The deletes of those of ``entries`` whose expiry is before ``now_us``."""
    return [Delete(memory_id=e.memory_id, expected_version=e.version) for e in entries
            if type(at := e.metadata.get(EXPIRES_AT)) is int and at < now_us]


def apply_each(memory: SharedMemory | AgentMemory, changes: Sequence[Change]) -> int:
    """Apply ``changes`` at once, or, if that is refused (an item changed or was deleted in
    between, or the actor may not change one), each alone, skipping those refused; return
    how many were applied."""
    if not changes:
        return 0
    try:
        memory.apply(changes)
        return len(changes)
    except MemSwarmError:
        applied = 0
        for change in changes:
            try:
                memory.apply([change])
                applied += 1
            except MemSwarmError as error:
                logger.debug("TTL change of %s skipped: %s", getattr(change, "memory_id", ""),
                             error)
        return applied


def sweep(memory: SharedMemory | AgentMemory) -> int:
    """Delete every item ``memory`` may read whose expiry has passed; return how many."""
    return apply_each(memory, expired(memory.read_scope(), now_micros()))


class Sweeper:
    """A thread that sweeps every ``minutes`` until stopped; :attr:`future` ends when it
    does (with its error, if a sweep raised something other than a refusal)."""

    def __init__(self, memory: SharedMemory | AgentMemory, minutes: float) -> None:
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0:
            raise InvalidValueError(f"sweep interval must be positive minutes, not {minutes!r}")
        self.memory = memory
        self.seconds = minutes * 60
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memswarm-ttl-sweeper",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.seconds):
                try:
                    swept = sweep(self.memory)
                except MemSwarmError as error:  # (a view or log not answering): next time
                    logger.warning("TTL sweep failed: %s", error)
                    continue
                if swept:
                    logger.info("TTL sweep deleted %d expired items", swept)
        except BaseException as error:  # the future carries it to whoever waits
            self.future.set_exception(error)
        else:
            self.future.set_result(None)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop sweeping; True if the thread ended within ``timeout`` seconds."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()
