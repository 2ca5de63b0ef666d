"""Forgets in SQL logs: recorded in the transaction of their event, finished at every open and
by every redaction, so a process killed between a forget event and its redaction leaves work
that the next open of the log (or the next forget) finishes.

A table ``{prefix}forgets`` holds one row per ``memory.forgotten`` event, written by a trigger
on the events table (so appends, imports and copies all record it) and ``pending`` until the
payloads of the memory's earlier events are gone from the table *and* from the files (the
SQLite WAL checkpoint, PostgreSQL's VACUUM). Rows are kept once done: their count and the
count still pending make the *forget epoch* that derived tables (snapshots) are saved against.

What a finished forget cannot reach, by design of the stores. PostgreSQL: row versions that a
replication slot or a standby's ``hot_standby_feedback`` keeps VACUUM from removing; the WAL
segments (``pg_wal``) written before the VACUUM, until the server recycles them; WAL archives,
base backups and replicas' own files; freed blocks of the disk below the database. SQLite:
copies of the file made outside MemSwarm; freed blocks of the disk below the file system.
Every store: backups. An operator erases those by rotating them (a ``CHECKPOINT`` and WAL
recycling, a new base backup and dropping the older ones, dropping stale slots).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection

from ..events import EventType

IN_CHUNK = 500  # positions per IN (...) clause


def forgets_table(prefix: str, metadata: sa.MetaData, events: sa.Table) -> sa.Table:
    """The forgets table; creating it also backfills the forget events already in the log
    (as pending) and installs the trigger that records every later one."""
    table = sa.Table(
        f"{prefix}forgets", metadata,
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  sa.ForeignKey(events.c.position), primary_key=True, autoincrement=False),
        sa.Column("memory_id", sa.String(512), nullable=False),
        sa.Column("pending", sa.Boolean, nullable=False),
    )
    sa.Index(f"{prefix}forgets_pending", table.c.pending)
    sa_event.listen(table, "after_create", partial(_install, prefix, events))
    return table


def _install(prefix: str, events: sa.Table, forgets: sa.Table, conn: Connection,
             **_: object) -> None:
    quote = conn.dialect.identifier_preparer.quote
    ev, fg = quote(events.name), quote(forgets.name)
    kind = EventType.MEMORY_FORGOTTEN
    conn.execute(sa.insert(forgets).from_select(
        ["position", "memory_id", "pending"],
        sa.select(events.c.position, events.c.memory_id, sa.true())
        .where(events.c.type == kind)))
    trigger = quote(f"{prefix}record_forget")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"CREATE OR REPLACE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN INSERT INTO {fg} (position, memory_id, pending) "
            "VALUES (NEW.position, NEW.memory_id, TRUE) ON CONFLICT DO NOTHING; "
            "RETURN NULL; END $$")
        conn.exec_driver_sql(
            f"CREATE TRIGGER {trigger} AFTER INSERT ON {ev} FOR EACH ROW "
            f"WHEN (NEW.type = '{kind}') EXECUTE FUNCTION {trigger}()")
    else:
        conn.exec_driver_sql(
            f"CREATE TRIGGER IF NOT EXISTS {trigger} AFTER INSERT ON {ev} "
            f"WHEN NEW.type = '{kind}' BEGIN "
            f"INSERT OR IGNORE INTO {fg} (position, memory_id, pending) "
            "VALUES (NEW.position, NEW.memory_id, TRUE); END")


def read_forget_epoch(conn: Connection, forgets: sa.Table) -> tuple[int, int]:
    """(forgets recorded, forgets pending): it changes whenever a forget is recorded or
    finished and never comes back to an earlier value, so a snapshot folded while it held one
    value cannot hold content that a forget since has erased."""
    row = conn.execute(sa.select(sa.func.count(),
                                 sa.func.count().filter(forgets.c.pending))).one()
    return int(row[0]), int(row[1])


def has_pending(conn: Connection, forgets: sa.Table) -> bool:
    return conn.execute(sa.select(forgets.c.position).where(forgets.c.pending)
                        .limit(1)).first() is not None


def erase(conn: Connection, events: sa.Table, forgets: sa.Table,
          derived: Sequence[sa.TableClause], positions: Sequence[int]) -> tuple[int, list[int]]:
    """Inside a write transaction: remove the payloads at ``positions`` and those of every
    pending forget's earlier events, and delete the rows of the ``derived`` tables (snapshots
    of the view, say) from the first position touched. Returns (payloads removed, positions of
    the pending forgets handled)."""
    removed = 0
    firsts = [min(positions)] if positions else []
    for start in range(0, len(positions), IN_CHUNK):
        chunk = list(positions[start:start + IN_CHUNK])
        removed += conn.execute(sa.update(events)
                                .where(events.c.position.in_(chunk), events.c.payload.is_not(None))
                                .values(payload=None)).rowcount
    pending = conn.execute(sa.select(forgets.c.position, forgets.c.memory_id)
                           .where(forgets.c.pending)).all()
    for at, memory_id in pending:
        mine = events.c.memory_id == memory_id
        removed += conn.execute(sa.update(events)
                                .where(mine, events.c.position < at,
                                       events.c.payload.is_not(None))
                                .values(payload=None)).rowcount
        first = conn.execute(sa.select(sa.func.min(events.c.position)).where(mine)).scalar()
        firsts.append(first or at)
    if firsts:
        for table in derived:
            conn.execute(sa.delete(table).where(table.c.position >= min(firsts)))
    return removed, [at for at, _ in pending]


def mark_done(conn: Connection, forgets: sa.Table, done: Sequence[int]) -> None:
    for start in range(0, len(done), IN_CHUNK):
        conn.execute(sa.update(forgets).where(forgets.c.position.in_(done[start:start + IN_CHUNK]))
                     .values(pending=False))


def postgres_xid(conn: Connection) -> int:
    """The id of the current PostgreSQL transaction (the one that erased, inside it)."""
    return int(conn.exec_driver_sql("SELECT txid_current()").scalar_one())


def postgres_holders(conn: Connection, xid: int) -> int:
    """How many other sessions (or prepared transactions) of this database began before
    transaction ``xid`` committed and still run: while one does, VACUUM must keep the row
    versions it erased. (Autovacuum workers do not hold VACUUM back; replication slots and a
    standby's feedback can, and are not counted: see the module's notes.)"""
    older = "age({}) >= age(CAST(CAST(:xid AS text) AS xid))"
    return int(conn.execute(sa.text(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
        "AND datname = current_database() AND backend_type <> 'autovacuum worker' AND ("
        + older.format("backend_xmin") + " OR " + older.format("backend_xid") + ")) + "
        "(SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database() AND "
        + older.format("transaction") + ")"),
        {"xid": xid % 2 ** 32}).scalar_one())
