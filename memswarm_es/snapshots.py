"""Snapshots of the folded view, stored beside the log, so that time travel folds few events.

A snapshot records the position it was folded to and the hash of the event there: if the log no
longer has that event with that hash, the snapshot is stale and is discarded.

:func:`snapshot_store_for` gives a log its store: a table in a SQL log's database, else one store
in this process per log object.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Hashable

import sqlalchemy as sa

from projections.fold import View, entry_from_row, entry_row

from .events import decode, encode
from .log.base import EventLog
from .log.sql import SQLEventLog


def encode_view(view: View) -> bytes:
    rows = [entry_row(e) for e in view.entries.values()]
    return encode([view.position, rows, view.members])


def decode_view(data: bytes) -> View:
    """Inverse of :func:`encode_view` (snapshots made before memberships existed hold none)."""
    position, rows, *rest = decode(data)
    entries = {}
    for row in rows:
        entry = entry_from_row(row)
        entries[entry.memory_id] = entry
    members = rest[0] if rest else {}
    if not isinstance(members, dict):
        raise ValueError("a snapshot's memberships are not a map")
    return View(entries, position, members)


class SnapshotStore(ABC):
    """Where snapshots live: keyed by position, each with the log's hash at that position.

    A walker takes :meth:`epoch` before it reads anything and passes it to :meth:`save`; the
    save is refused if a forget was recorded or finished since, so a snapshot never brings back
    content that a forget erased while it was being folded.

    A ``local`` store sees only the forgets made through it (its epoch lives in this process),
    so the time machine checks what it loads from one against the log's redactions.
    """

    local = False

    @abstractmethod
    def epoch(self) -> Hashable:
        """A token that changes (and never comes back) whenever a forget may have erased
        content: compare it, do not order it."""

    @abstractmethod
    def save(self, view: View, event_hash: bytes, epoch: Hashable) -> bool:
        """Store ``view`` (folded up to ``view.position``, whose event has ``event_hash``) if
        the store's epoch is still ``epoch``; return whether it was stored."""

    @abstractmethod
    def nearest(self, position: int) -> tuple[int, bytes] | None:
        """(position, event hash) of the latest snapshot at or before ``position``."""

    @abstractmethod
    def stored(self) -> list[tuple[int, bytes]]:
        """(position, event hash) of every snapshot, in order of position."""

    @abstractmethod
    def load(self, position: int) -> View:
        """The snapshot at ``position`` (which ``nearest`` named)."""

    @abstractmethod
    def discard(self, position: int) -> None:
        """Delete the snapshot at ``position``, if there is one."""

    @abstractmethod
    def delete_from(self, position: int) -> int:
        """Delete every snapshot at or after ``position``; return how many."""

    def close(self) -> None:
        """Release resources; the default holds none."""


class InProcessSnapshotStore(SnapshotStore):
    """Snapshots in a dict, for logs that live in this process. Its epoch counts the calls of
    :meth:`delete_from`, which every forget makes after redacting."""

    local = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[int, tuple[bytes, bytes]] = {}
        self._epoch = 0

    def epoch(self) -> int:
        with self._lock:
            return self._epoch

    def save(self, view: View, event_hash: bytes, epoch: Hashable) -> bool:
        state = encode_view(view)
        with self._lock:
            if epoch != self._epoch:
                return False
            self._snapshots[view.position] = (event_hash, state)
            return True

    def nearest(self, position: int) -> tuple[int, bytes] | None:
        with self._lock:
            found = [p for p in self._snapshots if p <= position]
            return (max(found), self._snapshots[max(found)][0]) if found else None

    def stored(self) -> list[tuple[int, bytes]]:
        with self._lock:
            return sorted((p, h) for p, (h, _) in self._snapshots.items())

    def load(self, position: int) -> View:
        with self._lock:
            return decode_view(self._snapshots[position][1])

    def discard(self, position: int) -> None:
        with self._lock:
            self._snapshots.pop(position, None)

    def delete_from(self, position: int) -> int:
        with self._lock:
            self._epoch += 1
            doomed = [p for p in self._snapshots if p >= position]
            for p in doomed:
                del self._snapshots[p]
            return len(doomed)


def snapshots_table(table_prefix: str) -> sa.Table:
    """The table of snapshots beside a SQL log whose tables have ``table_prefix``."""
    return sa.Table(
        f"{table_prefix}snapshots", sa.MetaData(),
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=False),
        sa.Column("event_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
    )


class SQLSnapshotStore(SnapshotStore):
    """Snapshots in a table of the log's own database (see :func:`snapshots_table`), derived
    from the log (:meth:`SQLEventLog.add_derived_table`): the redaction of a forget drops the
    snapshots it touches in its own transaction. Its epoch is the log's forget epoch, checked
    under the log's write lock when saving. Writes take that lock up front, so that they wait
    for other writers instead of failing on a lock upgrade."""

    def __init__(self, log: SQLEventLog) -> None:
        self._log = log
        self._engine = log.engine
        self._table = snapshots_table(log.table_prefix)
        log.add_derived_table(self._table)

    def epoch(self) -> Hashable:
        with self._engine.connect() as conn:
            return self._log.forget_epoch(conn)

    def save(self, view: View, event_hash: bytes, epoch: Hashable) -> bool:
        t = self._table
        state = encode_view(view)
        with self._log.write_transaction() as conn:
            if self._log.forget_epoch(conn) != epoch:
                return False
            conn.execute(sa.delete(t).where(t.c.position == view.position))
            conn.execute(sa.insert(t), {"position": view.position, "event_hash": event_hash,
                                        "state": state})
        return True

    def nearest(self, position: int) -> tuple[int, bytes] | None:
        t = self._table
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t.c.position, t.c.event_hash)
                               .where(t.c.position <= position)
                               .order_by(t.c.position.desc()).limit(1)).first()
        return (row.position, bytes(row.event_hash)) if row else None

    def stored(self) -> list[tuple[int, bytes]]:
        t = self._table
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.position, t.c.event_hash).order_by(t.c.position))
            return [(row.position, bytes(row.event_hash)) for row in rows]

    def load(self, position: int) -> View:
        t = self._table
        with self._engine.connect() as conn:
            state = conn.execute(sa.select(t.c.state).where(t.c.position == position)).scalar()
        if state is None:
            raise ValueError(f"no snapshot at {position}")
        return decode_view(bytes(state))

    def discard(self, position: int) -> None:
        t = self._table
        with self._log.write_transaction() as conn:
            conn.execute(sa.delete(t).where(t.c.position == position))

    def delete_from(self, position: int) -> int:
        t = self._table
        with self._log.write_transaction() as conn:
            return conn.execute(sa.delete(t).where(t.c.position >= position)).rowcount


_in_process: weakref.WeakKeyDictionary[EventLog, InProcessSnapshotStore] = (
    weakref.WeakKeyDictionary())
_in_process_lock = threading.Lock()


def snapshot_store_for(log: EventLog) -> SnapshotStore:
    """Where snapshots of ``log``'s view are kept: a table beside a SQL log (made if missing),
    else one store in this process per log object, so that every memory on that log sees the
    forgets made through any."""
    if isinstance(log, SQLEventLog):
        return SQLSnapshotStore(log)
    with _in_process_lock:
        store = _in_process.get(log)
        if store is None:
            store = _in_process[log] = InProcessSnapshotStore()
        return store
