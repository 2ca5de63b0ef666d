"""Snapshots of the folded view, stored beside the log, so that time travel folds few events.

A snapshot records the position it was folded to and the hash of the event there: if the log no
longer has that event with that hash, the snapshot is stale and is discarded.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from projections.fold import View, entry_from_row, entry_row

from .events import decode, encode


def encode_view(view: View) -> bytes:
    rows = [entry_row(e) for e in view.entries.values()]
    return encode([view.position, rows])


def decode_view(data: bytes) -> View:
    position, rows = decode(data)
    entries = {}
    for row in rows:
        entry = entry_from_row(row)
        entries[entry.memory_id] = entry
    return View(entries, position)


class SnapshotStore(ABC):
    """Where snapshots live: keyed by position, each with the log's hash at that position."""

    @abstractmethod
    def save(self, view: View, event_hash: bytes) -> None:
        """Store ``view`` (folded up to ``view.position``, whose event has ``event_hash``)."""

    @abstractmethod
    def nearest(self, position: int) -> tuple[int, bytes] | None:
        """(position, event hash) of the latest snapshot at or before ``position``."""

    @abstractmethod
    def load(self, position: int) -> View:
        """The snapshot at ``position`` (which ``nearest`` named)."""

    @abstractmethod
    def delete_from(self, position: int) -> int:
        """Delete every snapshot at or after ``position``; return how many."""

    def close(self) -> None:
        """Release resources; the default holds none."""


class InProcessSnapshotStore(SnapshotStore):
    """Snapshots in a dict, for logs that live in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[int, tuple[bytes, bytes]] = {}

    def save(self, view: View, event_hash: bytes) -> None:
        with self._lock:
            self._snapshots[view.position] = (event_hash, encode_view(view))

    def nearest(self, position: int) -> tuple[int, bytes] | None:
        with self._lock:
            found = [p for p in self._snapshots if p <= position]
            return (max(found), self._snapshots[max(found)][0]) if found else None

    def load(self, position: int) -> View:
        with self._lock:
            return decode_view(self._snapshots[position][1])

    def delete_from(self, position: int) -> int:
        with self._lock:
            doomed = [p for p in self._snapshots if p >= position]
            for p in doomed:
                del self._snapshots[p]
            return len(doomed)


def snapshots_table(table_prefix: str, metadata: sa.MetaData) -> sa.Table:
    """The table of snapshots, made with the log's own tables."""
    return sa.Table(
        f"{table_prefix}snapshots", metadata,
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=False),
        sa.Column("event_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
    )


class SQLSnapshotStore(SnapshotStore):
    """Snapshots in a table of the log's own database (see :func:`snapshots_table`)."""

    def __init__(self, engine: Engine, table: sa.Table) -> None:
        self._engine = engine
        # Writes take SQLite's write lock up front (BEGIN IMMEDIATE, see log/sql.py), so that
        # they wait for other writers instead of failing on a lock upgrade.
        self._writer = engine.execution_options(memswarm_write=True)
        self._table = table

    def save(self, view: View, event_hash: bytes) -> None:
        t = self._table
        with self._writer.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.position == view.position))
            conn.execute(sa.insert(t), {"position": view.position, "event_hash": event_hash,
                                        "state": encode_view(view)})

    def nearest(self, position: int) -> tuple[int, bytes] | None:
        t = self._table
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t.c.position, t.c.event_hash)
                               .where(t.c.position <= position)
                               .order_by(t.c.position.desc()).limit(1)).first()
        return (row.position, bytes(row.event_hash)) if row else None

    def load(self, position: int) -> View:
        t = self._table
        with self._engine.connect() as conn:
            state = conn.execute(sa.select(t.c.state).where(t.c.position == position)).scalar()
        return decode_view(bytes(state))

    def delete_from(self, position: int) -> int:
        t = self._table
        with self._writer.begin() as conn:
            return conn.execute(sa.delete(t).where(t.c.position >= position)).rowcount
