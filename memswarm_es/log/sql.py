"""The event log on SQLAlchemy Core: SQLite by default (WAL), PostgreSQL where one machine is not
enough.

Appends are serialized (``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on
PostgreSQL), and each append assigns ``head + 1 ...`` inside that lock, so positions are gapless
and commit in order: a reader can never see position N+1 before N.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine

from ..errors import (
    ChainBrokenError,
    CorruptLogError,
    ForeignStoreError,
    HeadConflictError,
    IdempotencyError,
    InvalidInputError,
    LogNotFoundError,
    RedactionIncompleteError,
    StorageError,
    VersionConflictError,
    needs_extra,
)
from ..events import (
    GENESIS_HASH,
    ROW_FIELDS,
    Event,
    NewEvent,
    event_from_row,
    event_row,
    events_from_rows,
    new_id,
    now_micros,
)
from . import scope_index
from .base import (
    Digest,
    EventFilter,
    EventLog,
    check_batch,
    check_import,
    resolve_retry,
    seal_batch,
)
from .readers import ThreadReaders
from .redaction import (
    erase,
    forgets_table,
    has_pending,
    mark_done,
    postgres_holders,
    postgres_xid,
    read_forget_epoch,
)
from .scope_index import LEGACY, fill_step, lag_select, scoped_select, scopes_table, uses_index
from .statements import Statement, compile_for

logger = logging.getLogger(__name__)

FORMAT = "memswarm-eventlog"
FORMAT_VERSION = "1"
_ADVISORY_LOCK_KEY = 0x6D656D73  # "mems"
_IN_CHUNK = 500  # ids per IN (...) clause
_CHECKPOINT_TRIES = 8  # a WAL checkpoint blocked by readers is retried this many times,
_CHECKPOINT_WAIT_MS = 250  # each waiting this long for them
_META_KEY_LENGTH = 64
_MMAP_BYTES = 1 << 30  # of a SQLite file mapped for reads (address space, not memory)
_DERIVED = "derived:"  # meta keys naming the tables derived from the events (add_derived_table)
_SCRUBBED = "scrubbed:"  # meta keys naming the tables of kept views that hold content (keep_view)
# Between the bounded transactions of a first fold (keep_view), the lock is left free this
# long (a share of the time it was held, at least the minimum) for other processes' appends.
_PAUSE_SHARE = 0.25
_MIN_PAUSE = 0.005
# A forget on PostgreSQL writes the tables it erased from anew (VACUUM FULL), waiting this long
# at most for their exclusive lock.
_REWRITE_LOCK_WAIT = "2s"
# The page cache of a transaction writing what is derived from the log (KiB, as SQLite's
# negative cache_size): a fold's index pages, spread all over, each written out once.
_DERIVED_CACHE = -65536


def _tables(prefix: str) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    meta = sa.Table(
        f"{prefix}meta", metadata,
        sa.Column("key", sa.String(_META_KEY_LENGTH), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    events = sa.Table(
        f"{prefix}events", metadata,
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(512), nullable=False, unique=True),
        sa.Column("type", sa.String(512), nullable=False),
        sa.Column("agent_id", sa.String(512)),
        sa.Column("group_id", sa.String(512)),
        sa.Column("context_id", sa.String(512)),
        sa.Column("actor", sa.String(512), nullable=False),
        sa.Column("memory_id", sa.String(512)),
        sa.Column("version", sa.Integer),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
        sa.Column("schema", sa.SmallInteger, nullable=False),
        sa.Column("payload", sa.LargeBinary),
        sa.Column("payload_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.UniqueConstraint("memory_id", "version", name=f"{prefix}memory_version"),
    )
    # No index on recorded_at: it never decreases along positions (see position_at); none on
    # the scopes and the actor either: they are indexed in a table of their own (scope_index).
    forgets_table(prefix, metadata, events)
    return metadata, meta, events, scopes_table(prefix, metadata)


def _check_sqlite_file(url: str) -> None:
    """Refuse to open a SQLite log whose file does not exist (connecting would create it)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if database in {"", ":memory:"} or database.startswith("file:"):
        return
    if not os.path.exists(database):
        raise LogNotFoundError(f"{url}: no such file")


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Let SQLAlchemy's "begin" hook choose the BEGIN statement (the pysqlite recipe).
    dbapi_connection.isolation_level = None
    # Damaged text must still be readable (verify() then names the event: its hash differs).
    dbapi_connection.text_factory = _lenient_text
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 60000")
    cursor.close()


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _fetch_all(cursor: Any, statement: str,
               parameters: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
    """The rows of ``statement``. On SQLite, text is first decoded by sqlite3 itself (in C;
    ``_lenient_text`` is a Python call per value): only when a value is not UTF-8 (a row
    damaged by hand) is the statement run again, decoding leniently, to the same rows."""
    connection = getattr(cursor, "connection", None)
    if type(connection) is not sqlite3.Connection or connection.text_factory is not _lenient_text:
        cursor.execute(statement, parameters)
        return list(cursor.fetchall())
    connection.text_factory = str
    try:
        cursor.execute(statement, parameters)
        return cursor.fetchall()
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    finally:
        connection.text_factory = _lenient_text
    cursor.execute(statement, parameters)
    return cursor.fetchall()


def _on_sqlite_begin(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get("memswarm_write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


class TransactionView(Protocol):
    """A view kept in the log's own database and in its own transactions (the SQL read model
    of :mod:`projections.sql` is one), so that it is exactly once by construction. The log
    calls these and knows nothing else of the view: it is passed in
    (:meth:`SQLEventLog.keep_view`). Both get the DB-API cursor of a transaction holding the
    log's write lock."""

    @property
    def content_tables(self) -> Sequence[str]:
        """Tables of the view whose rows hold memory content: every redaction, in any
        process, makes their freed row versions leave the files as it does the log's own."""

    def prepare(self, cursor: Any) -> bool:
        """Fold a bounded part of the events the view has not applied (read in the same
        transaction with :meth:`SQLEventLog.read_in`); True once the view is at the head (or
        is not this log's to keep). The log calls it in transactions of their own until it
        is, so that other writers take turns with a long first fold."""

    def apply_in(self, cursor: Any, events: Sequence[Event]) -> None:
        """Inside the transaction that records ``events`` (the batch's savepoint, when several
        batches commit together), right after they are inserted: apply them to the view
        (after at most a bounded number of the events it missed). An exception fails the
        batch; the view's changes roll back with its events."""

    def ended(self, committed: bool) -> None:
        """The transaction of the last :meth:`apply_in` calls has committed (or rolled
        back): what they applied is now in the view (or is not)."""


class SQLEventLog(EventLog):
    """An :class:`EventLog` in one SQL table.

    ``url`` is any SQLAlchemy URL; ``sqlite:///path.db`` (the default) and
    ``postgresql+psycopg://...`` are tested. ``synchronous`` sets SQLite's durability: ``FULL``
    (default) survives power loss, ``NORMAL`` survives a crashed process and is faster.
    """

    def __init__(self, url: str = "sqlite:///memswarm.db", *, table_prefix: str = "memswarm_",
                 synchronous: str = "FULL", engine: Engine | None = None,
                 create: bool = True) -> None:
        """``create=False`` opens an existing log only (readers, audit commands): a missing
        file, database or table raises :class:`LogNotFoundError` and creates nothing."""
        super().__init__()
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"unknown synchronous mode {synchronous!r}")
        self.url = url
        if not create and engine is None:
            _check_sqlite_file(url)
        with needs_extra():  # the database's driver, e.g. psycopg: the postgres extra
            self._engine = engine or sa.create_engine(url)
        self._dialect = self._engine.dialect.name
        if self._dialect == "sqlite":
            sa_event.listen(self._engine, "connect", _on_sqlite_connect)
            sa_event.listen(self._engine, "begin", _on_sqlite_begin)
            self._synchronous = synchronous.upper()
            sa_event.listen(self._engine, "connect", self._set_pragmas)
        self._writer = self._engine.execution_options(memswarm_write=True)
        self._lock = threading.Lock()  # held by the thread writing a group
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._views: list[TransactionView] = []  # kept in every append (keep_view)
        self._write_raw: Any = None  # the pooled connection appends write on (under _lock)
        self._write_cursor: Any = None  # a DB-API cursor on it, kept from one append to the next
        #: The head this object last wrote or read under the write lock (position, hash, time),
        #: or ``None``. An append takes it as the head without reading it, and the store
        #: checks it: the first event's row gets its hash only if the event before it is
        #: there with the hash it chains to (a log put back from an older copy, or from
        #: another history, fails that NOT NULL), and it collides with the event at its
        #: position if another writer moved the head on (the primary key). Either way the
        #: append is done again from the head read afresh.
        self._head_seen: tuple[int, bytes, int] | None = None
        self._table_prefix = table_prefix
        self._metadata, self._meta, self._events, self._scopes = _tables(table_prefix)
        t = self._events
        self._select = sa.select(*(t.c[name] for name in ROW_FIELDS))
        self._last_stmt = (sa.select(t.c.position, t.c.hash, t.c.recorded_at)
                           .order_by(t.c.position.desc()).limit(1))
        self._lock_stmt = sa.text("SELECT pg_advisory_xact_lock(:key)")
        self._sql = _PlainSQL(self._engine.dialect, self._events.name)
        self._queries: dict[tuple[tuple[str, ...], bool], Statement] = {}  # by filter shape
        self._scope_lag = compile_for(self._engine.dialect, lag_select(t, self._scopes))
        self._integrity_error: type[Exception] = self._engine.dialect.loaded_dbapi.IntegrityError
        #: The connections of each thread's own that reads run on (the kept view's too).
        self.readers = ThreadReaders(self._engine)
        self._identity = ""
        self._open(create)
        self._finish_forgets()

    # --- setup -------------------------------------------------------------------------------

    def _set_pragmas(self, dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {self._synchronous}")
        cursor.execute("PRAGMA secure_delete = ON")  # redacted payloads leave the file
        # Reads map the file rather than copy each page in by a system call: a read of many
        # rows spread through the file (an agent's memories in the view) takes half the time,
        # and the pages are the OS's cache, shared by every connection and process.
        cursor.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
        cursor.close()

    def _open(self, create: bool) -> None:
        """Create the tables in an empty database, or check that an existing one is ours."""
        try:
            with (self._writer if create else self._engine).begin() as conn:
                names = set(sa.inspect(conn).get_table_names())
                if self._meta.name not in names:
                    if self._events.name in names or (names and self._dialect == "sqlite"):
                        raise ForeignStoreError(
                            f"{self.url}: holds tables {sorted(names)} but no {self._meta.name}; "
                            "not a MemSwarm log")
                    if not create:
                        raise LogNotFoundError(f"{self.url}: no MemSwarm log here")
                    self._metadata.create_all(conn)
                    self._identity = new_id()
                    conn.execute(sa.insert(self._meta), [
                        {"key": "format", "value": FORMAT},
                        {"key": "format_version", "value": FORMAT_VERSION},
                        {"key": "log_id", "value": self._identity},
                    ])
                    return
                found = dict(conn.execute(sa.select(self._meta.c.key, self._meta.c.value)).all())
                if found.get("format") != FORMAT:
                    raise ForeignStoreError(f"{self.url}: {self._meta.name} is not a MemSwarm log")
                if found.get("format_version") != FORMAT_VERSION:
                    raise ForeignStoreError(
                        f"{self.url}: log format {found.get('format_version')} is not supported")
                if self._events.name not in names:
                    raise CorruptLogError(f"{self.url}: table {self._events.name} is missing")
                self._identity = found.get("log_id", "")
        except sa.exc.DatabaseError as exc:
            self._engine.dispose()
            raise CorruptLogError(f"{self.url}: cannot open as a MemSwarm log: {exc.orig}") from exc
        if not self._identity or not self._has_every_table():
            self._upgrade()

    def _has_every_table(self) -> bool:
        with self._engine.connect() as conn:
            return set(self._metadata.tables) <= set(sa.inspect(conn).get_table_names())

    def _upgrade(self) -> None:
        """Add what logs made by earlier versions lack (tables, the log's identity), under the
        write lock, so that processes opening one old log at once agree."""
        with self.write_transaction() as conn:
            self._metadata.create_all(conn)
            quote = conn.dialect.identifier_preparer.quote
            for index in LEGACY:  # the scope indexes of the events table (scope_index)
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {quote(self._table_prefix + index)}")
            found = conn.execute(sa.select(self._meta.c.value)
                                 .where(self._meta.c.key == "log_id")).scalar()
            if found is None:
                found = new_id()
                conn.execute(sa.insert(self._meta), [{"key": "log_id", "value": found}])
            self._identity = found

    def identity(self) -> str:
        return self._identity

    # --- for what is kept beside the log (snapshots of the view: memswarm_es.snapshots) ------

    @property
    def engine(self) -> Engine:
        """The log's SQLAlchemy engine: tables kept beside the log live in its database."""
        return self._engine

    @property
    def table_prefix(self) -> str:
        """The prefix of the log's table names; tables kept beside the log take it too."""
        return self._table_prefix

    @contextmanager
    def write_transaction(self, *, derived: bool = False) -> Iterator[Connection]:
        """A transaction holding the log's write lock (SQLite's ``BEGIN IMMEDIATE``, a
        transaction-scoped advisory lock on PostgreSQL): appends and redactions of this log, in
        any process, wait for it. It commits when the block ends, and rolls back on an
        exception.

        ``derived``: the transaction writes only what is derived from the log (a view), which
        a replay can always make again, so on SQLite its commit does not wait for the disk
        (``synchronous=NORMAL``): a crash can lose it, never make it ahead of the log, since
        the write-ahead log is replayed in order and the events it folded committed first. It
        also gets a larger page cache (:meth:`_relax`); both are set back after it."""
        with self._writer.connect() as conn:
            restore = self._relax(conn.connection.dbapi_connection) if derived else None
            try:
                with conn.begin():
                    if self._dialect == "postgresql":
                        conn.execute(self._lock_stmt, {"key": _ADVISORY_LOCK_KEY})
                    yield conn
            finally:
                if restore is not None:
                    try:
                        restore()
                    except Exception:  # never back in the pool, where appends would get it
                        conn.invalidate()
                        raise

    def _relax(self, raw: Any) -> Callable[[], None] | None:
        """On SQLite, outside a transaction, set ``raw`` up for one that writes only what is
        derived from the log (:meth:`write_transaction`): its commit does not wait for the disk,
        and a larger page cache holds the pages of the indexes it writes all over, each then
        written out once; returns what sets both back (``None`` elsewhere)."""
        if self._dialect != "sqlite":
            return None
        cursor = raw.cursor()
        cache = cursor.execute("PRAGMA cache_size").fetchone()[0]
        cursor.execute(f"PRAGMA cache_size = {_DERIVED_CACHE}")
        if self._synchronous in ("FULL", "EXTRA"):
            cursor.execute("PRAGMA synchronous = NORMAL")

        def restore() -> None:
            cursor.execute(f"PRAGMA synchronous = {self._synchronous}")
            cursor.execute(f"PRAGMA cache_size = {int(cache)}")
            cursor.close()

        return restore

    def forget_epoch(self, conn: Connection) -> tuple[int, int]:
        """(forgets recorded, forgets pending), read in ``conn``: it changes whenever a forget
        is recorded or finished and never comes back to an earlier value, so a copy of the view
        folded while it held one value, and saved only while it still does (checked in a
        :meth:`write_transaction`), cannot hold content that a forget since has erased."""
        return read_forget_epoch(conn, self._forgets)

    def add_derived_table(self, table: sa.Table) -> None:
        """Keep ``table`` in the log's database as derived from its events, its rows keyed by a
        ``position`` column: it is made if missing (under the write lock, so that processes
        opening one log at once agree) and recorded in the log, and from then on every
        redaction deletes its rows from the first position it touches, in the redaction's own
        transaction, so that no derived row keeps content a forget erased. A table found there
        but not recorded yet (made before derived tables were recorded) is emptied as it is
        recorded, since the redactions before did not keep it."""
        key = _DERIVED + table.name
        if "position" not in table.c or len(key) > _META_KEY_LENGTH:
            raise InvalidInputError(f"{table.name!r} cannot be a derived table of this log: it "
                                    "needs a position column and a name of at most "
                                    f"{_META_KEY_LENGTH - len(_DERIVED)} characters")
        with self._engine.connect() as conn:
            if (table.name in self._derived_names(conn)
                    and sa.inspect(conn).has_table(table.name)):
                return
        with self.write_transaction() as conn:
            recorded = table.name in self._derived_names(conn)
            if not sa.inspect(conn).has_table(table.name):
                table.create(conn)
            elif not recorded:
                conn.execute(sa.delete(table))
            if not recorded:
                conn.execute(sa.insert(self._meta), {"key": key, "value": "position"})

    def _derived_names(self, conn: Connection) -> list[str]:
        return self._names(conn, _DERIVED)

    def _names(self, conn: Connection, kind: str) -> list[str]:
        """The table names recorded in the meta table under ``kind``."""
        m = self._meta
        keys = conn.execute(sa.select(m.c.key).where(m.c.key.startswith(kind))).scalars()
        return [key[len(kind):] for key in keys]

    # --- for a view kept in the log's own transactions (projections.sql) --------------------

    def keep_view(self, view: TransactionView, *, in_appends: bool = True) -> None:
        """Keep ``view`` in this log's database: its content tables are recorded (so that
        every redaction scrubs them, in any process), and it is brought up to the head in
        bounded transactions, pausing between them so that other processes' appends go on
        (:meth:`TransactionView.prepare`; a killed fold resumes where it committed). With
        ``in_appends``, every append and import through this object then applies its events
        to the view inside the transaction that records them, so the view's checkpoint is the
        head by construction; without, appends write the log alone and the view's readers
        fold what it lacks (a batch of writes folded at once, by a projector)."""
        with self._lock, self.write_transaction() as conn:
            self.record_content_tables(conn, view.content_tables)
        while True:
            started = time.perf_counter()
            with self._lock, self._cursor_transaction(derived=True) as cursor:
                if view.prepare(cursor):
                    if in_appends:
                        self._views.append(view)
                    return
            time.sleep(max(_MIN_PAUSE, (time.perf_counter() - started) * _PAUSE_SHARE))

    def record_content_tables(self, conn: Connection, names: Sequence[str],
                              held: bool = True) -> None:
        """Record (or, with ``held=False``, no longer record) in ``conn``, a
        :meth:`write_transaction`, tables beside the log whose rows hold memory content: every
        redaction, in any process, scrubs them as it does the log's own."""
        if not held:
            conn.execute(sa.delete(self._meta).where(
                self._meta.c.key.in_([_SCRUBBED + name for name in names])))
            return
        known = set(self._names(conn, _SCRUBBED))
        new = [name for name in names if name not in known]
        if any(len(_SCRUBBED + name) > _META_KEY_LENGTH for name in new):
            raise InvalidInputError(f"table names {new} are too long to be recorded")
        if new:
            conn.execute(sa.insert(self._meta),
                         [{"key": _SCRUBBED + name, "value": "content"} for name in new])

    def read_in(self, cursor: Any, after: int, limit: int) -> list[Event]:
        """At most ``limit`` events after ``after``, read with ``cursor`` (a kept view reads
        the events it has not applied yet inside the log's transaction)."""
        return events_from_rows(_fetch_all(cursor, self._sql.read_some, (after, limit)))

    def _record(self, cursor: Any, events: list[Event],
                after: tuple[int, bytes] | None = None) -> None:
        """Insert ``events`` and apply them to the kept views, in the caller's transaction.

        ``after``: the head (position and hash) the first event was sealed after, taken
        without reading it; the first event is refused (a constraint) unless that head is in
        the store."""
        rest = events
        if after is not None:
            cursor.execute(self._sql.insert_after, (*event_row(events[0]), *after))
            rest = events[1:]
        if len(rest) == 1:  # a single write: execute, without executemany's iteration
            cursor.execute(self._sql.insert, event_row(rest[0]))
        elif rest:
            cursor.executemany(self._sql.insert, [event_row(e) for e in rest])
        for view in self._views:
            view.apply_in(cursor, events)

    @contextmanager
    def _cursor_transaction(self, derived: bool = False) -> Iterator[Any]:
        """What :meth:`write_transaction` is, on the DB-API connection itself (a cursor), for
        the append's path: no per-statement cost of SQLAlchemy's. Commits when the block
        ends; rolls back on an exception (a connection that cannot is dropped). The caller
        holds ``_lock``: the connection and its cursor are the writer's own, kept from one
        transaction to the next."""
        if self._write_raw is None:
            self._write_raw = self._engine.raw_connection()
            self._write_cursor = self._write_raw.dbapi_connection.cursor()
        raw, cursor = self._write_raw, self._write_cursor
        restore = self._relax(raw) if derived else None
        try:
            cursor.execute(*self._sql.begin)
            yield cursor
            raw.dbapi_connection.commit()
        except BaseException:
            self._head_seen = None
            try:
                raw.rollback()
            except Exception:  # the connection is broken: the next transaction makes another
                self._drop_writer()
                restore = None
            self._ended(False)
            raise
        else:
            self._ended(True)
        finally:
            if restore is not None:
                try:
                    restore()
                except Exception:  # appends must never run relaxed: drop the connection
                    self._drop_writer()
                    raise

    def _drop_writer(self) -> None:
        """Invalidate the append's connection: the next transaction makes another."""
        raw, self._write_raw, self._write_cursor = self._write_raw, None, None
        raw.invalidate()

    def _ended(self, committed: bool) -> None:
        for view in self._views:
            view.ended(committed)

    @property
    def _forgets(self) -> sa.Table:
        return self._metadata.tables[f"{self._table_prefix}forgets"]

    def adopt_identity(self, log_id: str) -> None:
        """Take ``log_id`` as this log's identity (a copy carries its source's); only while
        the log holds no event, else :class:`ChainBrokenError`."""
        with self._lock, self.write_transaction() as conn:
            if conn.execute(self._last_stmt).first() is not None:
                raise ChainBrokenError("only an empty log can take another log's identity")
            conn.execute(sa.update(self._meta).where(self._meta.c.key == "log_id")
                         .values(value=log_id))
        self._identity = log_id

    def close(self) -> None:
        with self._lock:
            if self._write_raw is not None:
                self._write_cursor.close()
                self._write_raw.close()
                self._write_raw = self._write_cursor = None
        self.readers.close()
        self._engine.dispose()

    # --- writing -------------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], expected_head: int | None = None) -> list[Event]:
        """Append atomically. Concurrent appends from threads of this process are grouped into
        one transaction (group commit); each batch still succeeds or fails on its own."""
        if not events:
            return []
        check_batch(events)
        mine = _Pending(events, expected_head)
        with self._queue_lock:
            self._queue.append(mine)
        with self._lock:  # whoever holds the lock writes every batch queued so far
            if not mine.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._write_group(group)
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result

    def _write_group(self, group: list[_Pending]) -> None:
        """Write the batches of ``group`` in one transaction; each succeeds or fails alone.

        A batch refused by a constraint is rolled back to its savepoint. A batch that fails in
        any other way may have spoiled the transaction, so the whole transaction is rolled
        back and the other batches are written again without it. Batches are acknowledged
        only once their transaction has committed.
        """
        pending_group = list(group)
        try:
            while pending_group:
                spoiler = self._try_group(pending_group)
                if spoiler is None:
                    break
                pending_group = [p for p in pending_group if p is not spoiler]
                for other in pending_group:
                    other.error = None
        finally:
            for pending in group:
                if pending.error is not None:
                    self._settle(pending)
                elif pending.result is None:
                    pending.error = StorageError("append did not complete")
                pending.done = True
        if any(p.result is not None for p in group):
            self._notify()

    def _try_group(self, group: list[_Pending]) -> _Pending | None:
        """One transaction for ``group``, a savepoint per batch when there are several.
        Returns the batch whose failure rolled back the whole transaction, if one did."""
        written: list[tuple[_Pending, list[Event]]] = []
        spoiler: _Pending | None = None
        seen = self._head_seen
        if any(pending.expected_head is not None for pending in group):
            seen = None  # a batch's condition on the head is checked against the head read
        try:
            with self._cursor_transaction() as cursor:
                now = self._sql.clock(cursor)
                head, head_hash, head_time = seen or self._sql.last(cursor)
                for pending in group:
                    if pending.expected_head is not None and pending.expected_head != head:
                        pending.error = HeadConflictError(pending.expected_head, head)
                        continue
                    try:  # sealing touches no table: a batch that cannot be sealed fails alone
                        sealed = seal_batch(pending.events, head, head_hash, head_time,
                                            now_micros() if now is None else now)
                    except Exception as exc:
                        pending.error = exc
                        continue
                    unread = seen is not None and not written  # the head was taken unread
                    after = (head, head_hash) if unread and head > 0 else None
                    try:
                        if len(group) == 1:
                            self._record(cursor, sealed, after)
                        else:
                            self._record_in_savepoint(cursor, sealed, after)
                    except self._integrity_error as exc:  # a constraint: this batch alone
                        if unread:
                            raise _StaleHead from exc  # or the head seen was not the head
                        pending.error = exc
                        if len(group) == 1:
                            raise
                        continue
                    except Exception as exc:
                        pending.error, spoiler = exc, pending
                        raise
                    written.append((pending, sealed))
                    head, head_hash, head_time = (
                        sealed[-1].position, sealed[-1].hash, sealed[-1].recorded_at_us)
        except _StaleHead:  # rolled back, and the head seen forgotten: again, reading it
            for pending in group:
                pending.error = None
            return self._try_group(group)
        except Exception as exc:
            if spoiler is not None and len(group) > 1:
                return spoiler
            for pending in group:
                if pending.error is None:
                    pending.error = StorageError(f"append failed: {exc!r}")
            return None
        for pending, sealed in written:  # committed: only now acknowledged
            pending.result = sealed
        self._head_seen = head, head_hash, head_time
        return None

    def _record_in_savepoint(self, cursor: Any, events: list[Event],
                             after: tuple[int, bytes] | None) -> None:
        """:meth:`_record` in a savepoint of its own: a refused batch leaves the others."""
        cursor.execute("SAVEPOINT memswarm_batch")
        try:
            self._record(cursor, events, after)
        except BaseException:
            cursor.execute("ROLLBACK TO SAVEPOINT memswarm_batch")
            raise
        finally:
            cursor.execute("RELEASE SAVEPOINT memswarm_batch")

    def _settle(self, pending: _Pending) -> None:
        """A batch was refused: a retry of recorded events gets them back; else a typed error."""
        if isinstance(pending.error, StorageError):
            return
        if not isinstance(pending.error, (self._integrity_error, HeadConflictError)):
            error = pending.error
            pending.error = StorageError(f"append failed: {getattr(error, 'orig', error)!r}")
            pending.error.__cause__ = error
            return
        try:
            with self._engine.connect() as conn:
                retry = resolve_retry(pending.events, self._recorded(conn, pending.events))
        except IdempotencyError as exc:
            pending.error = exc
            return
        if retry is not None:
            pending.result, pending.error = retry, None
        elif not isinstance(pending.error, HeadConflictError):
            pending.error = self._explain_conflict(pending.events)

    def import_events(self, events: Sequence[Event]) -> int:
        if not events:
            return self.head()
        with self._lock:
            try:
                with self._cursor_transaction() as cursor:
                    head, head_hash, _ = self._sql.last(cursor)
                    check_import(events, head, head_hash)
                    self._record(cursor, list(events))
                last = events[-1]
                self._head_seen = last.position, last.hash, last.recorded_at_us
            except self._integrity_error as exc:
                raise IdempotencyError(f"imported events clash with recorded ones: {exc}"
                                       ) from exc
        self._notify()
        return events[-1].position

    def _recorded(self, conn: Connection, events: Sequence[NewEvent]) -> dict[str, Event]:
        ids = [e.event_id for e in events]
        found: dict[str, Event] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start:start + _IN_CHUNK]
            rows = conn.execute(self._select.where(self._events.c.event_id.in_(chunk)))
            found.update((e.event_id, e) for e in map(event_from_row, rows))
        return found

    def _explain_conflict(self, events: Sequence[NewEvent]) -> Exception:
        """After a unique-constraint failure, name the (memory_id, version) that was taken."""
        with self._engine.connect() as conn:
            for new in events:
                if new.memory_id is None or new.version is None:
                    continue
                current = conn.execute(
                    sa.select(sa.func.max(self._events.c.version))
                    .where(self._events.c.memory_id == new.memory_id)
                ).scalar() or 0
                if new.version <= current:
                    return VersionConflictError(new.memory_id, new.version - 1, current)
        return StorageError("append violated a unique constraint")

    # --- reading -------------------------------------------------------------------------------

    def read(self, after: int = 0, limit: int | None = None) -> list[Event]:
        def rows(cursor: Any) -> list[Any]:  # a single statement: one snapshot by itself
            if limit is None:
                rows = _fetch_all(cursor, self._sql.read_all, (after,))
            else:
                rows = _fetch_all(cursor, self._sql.read_some, (after, limit))
            return rows

        return events_from_rows(self.readers.run(rows))

    def query(self, where: EventFilter, after: int = 0, limit: int | None = None,
              reverse: bool = False) -> list[Event]:
        values: dict[str, Any] = {"after": after, **dict(where.scope.parts()),
                                  "memory_id": where.memory_id, "actor": where.actor,
                                  "until": where.until_position, "limit": limit}
        shape = (tuple(name for name, value in values.items() if value is not None), reverse)
        stmt = self._queries.get(shape)
        if stmt is None:
            query = (scoped_select(self._events, self._scopes, *shape) if uses_index(shape[0])
                     else self._query(*shape))
            stmt = self._queries[shape] = compile_for(self._engine.dialect, query)
        if uses_index(shape[0]):
            self._index_scopes()
        given = stmt.params({k: v for k, v in values.items() if v is not None})
        rows = self.readers.run(lambda cursor: _fetch_all(cursor, stmt.sql, given))
        return events_from_rows(rows)  # (one statement: one snapshot)

    def _index_scopes(self) -> None:
        """Fill the scope index (:mod:`.scope_index`) up to the head when it lags more than
        ``scope_index.LAG`` events, in bounded transactions of their own. A failure (a
        read-only file) is logged: the query is still exact, scanning what is not indexed."""
        head, covered = self.readers.run(lambda cursor: self._scope_lag.run(cursor, {})[0])
        if (head or 0) - (covered or 0) <= scope_index.LAG:
            return
        fill = fill_step(self._events, self._scopes, scope_index.STEP)
        try:
            while (covered or 0) < head:
                with self._lock, self.write_transaction(derived=True) as conn:
                    conn.execute(fill)
                    covered = conn.execute(sa.select(sa.func.max(self._scopes.c.position))
                                           ).scalar()
        except sa.exc.DBAPIError as exc:
            logger.warning("%s: the scope index is not filled, queries scan: %s", self.url, exc)

    def _query(self, names: tuple[str, ...], reverse: bool) -> sa.Select[Any]:
        """The statement of :meth:`query` for the filters ``names`` (the others unset) that
        need no scope index: a memory's events, or the whole log's."""
        t = self._events
        conditions = [t.c.position > sa.bindparam("after")]
        conditions += [t.c[name] == sa.bindparam(name) for name in names
                       if name in ("agent_id", "group_id", "context_id", "memory_id", "actor")]
        if "until" in names:
            conditions.append(t.c.position <= sa.bindparam("until"))
        stmt = self._select.where(*conditions).order_by(
            t.c.position.desc() if reverse else t.c.position)
        return stmt.limit(sa.bindparam("limit")) if "limit" in names else stmt

    def redact(self, positions: Sequence[int]) -> int:
        """Remove the payloads at ``positions`` and finish every pending forget (see
        :mod:`.redaction`) in one write transaction that also drops the rows of the derived
        tables (:meth:`add_derived_table`) from the first position touched; then make the bytes
        leave the files (:meth:`_scrub_files`). Raises :class:`RedactionIncompleteError` if
        they may not have, leaving the forgets pending for the next open or forget."""
        with self._lock, self.write_transaction() as conn:
            derived = [sa.table(name, sa.column("position"))
                       for name in self._derived_names(conn)]
            removed, forgets = erase(conn, self._events, self._forgets, derived, positions)
            xid = postgres_xid(conn) if self._dialect == "postgresql" else 0
            present = set(sa.inspect(conn).get_table_names())
            tables = [self._events.name, *(name for name in self._names(conn, _SCRUBBED)
                                           if name in present)]
        if not removed and not forgets:
            return 0
        self._scrub_files(xid, tables)
        with self._writer.begin() as conn:
            mark_done(conn, self._forgets, forgets)
        return removed

    def _finish_forgets(self) -> None:
        """At open: finish the forgets a killed process left pending. A failure (a reader
        blocking the WAL checkpoint, a read-only file) is logged; the forgets stay pending."""
        with self._engine.connect() as conn:
            if not has_pending(conn, self._forgets):
                return
        try:
            self.redact([])
        except (StorageError, sa.exc.DBAPIError) as exc:
            logger.warning("%s: pending forgets not finished yet: %s", self.url, exc)

    def _scrub_files(self, xid: int, tables: list[str]) -> None:
        """Make removed payloads (and the rows of kept views that held content) leave the
        files. SQLite: a TRUNCATE checkpoint copies the WAL (which still holds them) into the
        database, whose freed space ``secure_delete`` zeroed, and empties the WAL; it needs
        every reader gone, so it is retried a bounded number of times. PostgreSQL: ``VACUUM
        FULL`` writes ``tables`` and their TOAST tables anew, without the old row versions
        (a plain VACUUM frees their space in each page but leaves their bytes there until
        that space is reused; :mod:`.redaction` says what a rewrite cannot reach), unless a
        transaction older than the erasing one (``xid``) still runs and needs them."""
        if self._dialect == "postgresql":
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                holders = postgres_holders(conn, xid)
                self._rewrite_tables(conn, tables, full=not holders)
            if holders:
                raise RedactionIncompleteError(
                    f"{self.url}: the forgotten payloads are gone from the table, but "
                    f"{holders} older transaction(s) still running kept VACUUM from removing "
                    f"the old row versions from the pages of {', '.join(tables)}; the forget "
                    "stays pending and is finished by the next open or forget", tables)
            return
        if self._dialect != "sqlite":
            return
        raw = self._engine.raw_connection()  # autocommit: no transaction around the checkpoint
        try:
            cursor = raw.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {_CHECKPOINT_WAIT_MS}")
            try:
                for attempt in range(_CHECKPOINT_TRIES):
                    busy, _, _ = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    if not busy:
                        return
                    time.sleep(min(0.01 * 2 ** attempt, 0.2))
            finally:
                cursor.execute("PRAGMA busy_timeout = 60000")
                cursor.close()
        finally:
            raw.close()
        database = self._engine.url.database or ""
        raise RedactionIncompleteError(
            f"{self.url}: the forgotten payloads are gone from the table, but a reader kept the "
            "WAL from being checkpointed, so their bytes may remain in the database file and its "
            "-wal; the forget stays pending and is finished by the next open or forget",
            [database, f"{database}-wal"])

    def _rewrite_tables(self, conn: Connection, tables: list[str], full: bool) -> None:
        """``VACUUM FULL`` each of ``tables`` (a plain VACUUM unless ``full``: while older
        transactions hold the old row versions, no rewrite can drop them). A rewrite waits at
        most :data:`_REWRITE_LOCK_WAIT` for its exclusive lock, so that a reader holding the
        table open cannot stall every other query behind it: the forget then stays pending
        (:class:`RedactionIncompleteError`)."""
        quote = conn.dialect.identifier_preparer.quote
        if not full:
            for table in tables:
                conn.exec_driver_sql(f"VACUUM {quote(table)}")
            return
        conn.exec_driver_sql(f"SET lock_timeout = '{_REWRITE_LOCK_WAIT}'")
        try:
            for table in tables:
                conn.exec_driver_sql(f"VACUUM FULL {quote(table)}")
        except sa.exc.OperationalError as exc:
            raise RedactionIncompleteError(
                f"{self.url}: the forgotten payloads are gone from the table, but a transaction "
                f"holding {table} open kept it from being written anew without the old row "
                "versions (whose bytes stay in its pages until then); the forget stays pending "
                "and is finished by the next open or forget", tables) from exc
        finally:
            conn.exec_driver_sql("RESET lock_timeout")

    def position_at(self, time_us: int) -> int:
        """A binary search over positions (``recorded_at`` never decreases along them), a
        seek on the primary key at each step, on one connection: the log keeps no index on
        the time, which every append would pay for."""
        def search(cursor: Any) -> int:
            cursor.execute(self._sql.head)
            lo, hi = 0, int(cursor.fetchall()[0][0] or 0)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                cursor.execute(self._sql.time_after, (mid - 1,))
                found = cursor.fetchall()
                if found and isinstance(found[0][0], int) and found[0][0] <= time_us:
                    lo = mid
                else:
                    hi = mid - 1
            return lo

        return self.readers.run(search)

    def stray_position(self) -> int | None:
        t = self._events
        with self._engine.connect() as conn:
            return conn.execute(sa.select(sa.func.min(t.c.position))
                                .where(t.c.position < 1)).scalar()

    def change_stamp(self) -> object | None:
        """SQLite's ``data_version`` on the thread's own connection, which any commit of
        another connection (this process's appends and folds included) changes."""
        return self.readers.stamp() if self._dialect == "sqlite" else None

    def head(self) -> int:
        def head(cursor: Any) -> int:
            cursor.execute(self._sql.head)
            return int(cursor.fetchall()[0][0] or 0)

        return self.readers.run(head)

    def digest(self) -> Digest:
        position, hash, _ = self.readers.run(self._sql.last)
        return Digest(position, hash)


class _PlainSQL:
    """The statements of the append's path and of reading in order, as SQL text for the
    DB-API cursor of ``dialect`` (parameters by position)."""

    def __init__(self, dialect: sa.Dialect, table: str) -> None:
        quote = dialect.identifier_preparer.quote
        events = quote(table)
        columns = ", ".join(quote(name) for name in ROW_FIELDS)
        mark = _MARKS.get(dialect.paramstyle)
        if mark is None:
            raise ValueError(f"parameter style {dialect.paramstyle!r} is not supported")
        self.postgres = dialect.name == "postgresql"
        self.begin: tuple[Any, ...] = (
            (f"SELECT pg_advisory_xact_lock({mark})", (_ADVISORY_LOCK_KEY,)) if self.postgres
            else ("BEGIN IMMEDIATE",) if dialect.name == "sqlite" else ("SELECT 1",))
        marks = [mark] * len(ROW_FIELDS)
        self.insert = f"INSERT INTO {events} ({columns}) VALUES ({', '.join(marks)})"
        position, hash_ = quote("position"), quote("hash")
        # The insert of an event after a head taken unread: its hash (the last column, NOT
        # NULL) is NULL unless the head is there with the hash the event chains to.
        assert ROW_FIELDS[-1] == "hash"
        marks[-1] = (f"(SELECT {mark} FROM {events} WHERE {position} = {mark} "
                     f"AND {hash_} = {mark})")
        self.insert_after = f"INSERT INTO {events} ({columns}) VALUES ({', '.join(marks)})"
        last = (f"SELECT {position}, {hash_}, {quote('recorded_at')} FROM {events} "
                f"ORDER BY {position} DESC LIMIT 1")
        self._last = last
        self.read_all = (f"SELECT {columns} FROM {events} WHERE {position} > {mark} "
                         f"ORDER BY {position}")
        self.head = f"SELECT max({position}) FROM {events}"
        self.time_after = (f"SELECT {quote('recorded_at')} FROM {events} "
                           f"WHERE {position} > {mark} ORDER BY {position} LIMIT 1")
        self.read_some = f"{self.read_all} LIMIT {mark}"

    def last(self, cursor: Any) -> tuple[int, bytes, int]:
        """The head's position, hash and time, read in the caller's transaction."""
        cursor.execute(self._last)
        row = cursor.fetchone()
        return (0, GENESIS_HASH, 0) if row is None else (row[0], bytes(row[1]), row[2])

    def clock(self, cursor: Any) -> int | None:
        """The store's clock in microseconds where it has one (PostgreSQL), so that no
        client's clock can pin recorded_at into the future; else ``None``."""
        if not self.postgres:
            return None
        cursor.execute("SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint")
        return int(cursor.fetchone()[0])


_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class _StaleHead(Exception):
    """An append past the head this object saw collided: another writer may have moved it."""


@dataclass(eq=False)
class _Pending:
    """One caller's batch waiting in the group commit queue, and its outcome."""

    events: Sequence[NewEvent]
    expected_head: int | None
    result: list[Event] | None = None
    error: BaseException | None = None
    done: bool = False


def _row(event: Event) -> dict[str, object]:
    """The insert parameters of ``event``: its row, by column name."""
    return dict(zip(ROW_FIELDS, event_row(event), strict=True))
