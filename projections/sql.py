"""The SQL read model: the view of a log kept in the log's own database (SQLite, PostgreSQL).

Its tables sit beside the log's and take its table prefix (``memswarm_view_*``):

- ``memories``: a row per live memory: the position of its first write (the key, so that a
  read in position order walks the table in order), its id, its scope ids (each indexed with
  the position) and the entry as one msgpack blob (:func:`~projections.fold.entry_row`, with the
  permissions and the namespace packed apart: see ``_blob``);
- ``readers``: a row per (position, principal) that may read the memory at that position;
- ``members``: (group, agent, admin) for every member of every group;
- ``state``: one row: the checkpoint and the identity of the log the view follows.

Kept by its log (:meth:`~memswarm_es.log.sql.SQLEventLog.keep_view`), the view is folded either
by the next read (``in_appends=False``, :class:`~memswarm_es.memory.SQLiteSharedMemory`'s
default ``view_upkeep="read"``): the view folds every write since itself
(:meth:`fold_in_store`), in transactions of about :data:`FOLD_SECONDS` that read the events
under the log's lock and commit without waiting for the disk (derived data); or inside the
transaction of every append, right after the events are inserted (``view_upkeep="append"``): its
checkpoint is then the log's head by construction. Either way no event is applied twice or lost,
and opening reads no event. A log that had no view yet is folded once, in transactions of about
:data:`FOLD_SECONDS` each (resumed where the last committed, if the folding process dies), with
pauses between them in which other processes append. Appends by processes that do not keep it in
their appends leave it behind; a kept append catches up at most :data:`CATCH_UP` of the events
it missed in its own transaction (taking its own events only once that reaches them), and so
does any projector, a batch per transaction, since it is an ordinary
:class:`~projections.base.ReadModel` too (``sql+<log url>`` opens it by URL). A view dropped by
another process is skipped by appends, which go on without it.

Every query filters inside the database: an agent reads what its scope's WHERE selects and an
``EXISTS`` finds among the readers, for the agent's principals, which the same statement
computes from the members table.

A forget ends the memory in the transaction of its event (the fold drops it), and a trigger on
the events table deletes its rows in that same transaction even when the appending process
does not keep the view; the redaction that follows scrubs the view's table as it does the log's
(the WAL checkpoint on SQLite, whose ``secure_delete`` zeroes freed space; ``VACUUM FULL``
on PostgreSQL). A replay fills a twin in tables of its own (``view_next_<random>_*``, so that
concurrent replays do not meet), with the same trigger and its content table recorded for the
redactions to scrub; the twin deletes its tables when its replay ends (a killed replay leaves
them, still kept clean of forgotten content).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memswarm_es.errors import CheckpointConflictError, InvalidInputError, LogMismatchError
from memswarm_es.events import Event, EventType, decode, encode
from memswarm_es.log.base import EventLog
from memswarm_es.log.sql import SQLEventLog
from memswarm_es.log.statements import Statement, compile_for
from memswarm_es.namespaces import (
    Namespace,
    namespace_from_text,
    namespace_text,
    stored_namespace,
    text_range,
)
from memswarm_es.principals import EVERYONE, GROUP, agent, principals_of, stored_principals
from memswarm_es.scopes import SCOPE_NAMES, Scope

from .base import ReadModel, folded
from .fold import (
    ENTRY_FIELDS,
    Change,
    MembershipChange,
    MemoryEntry,
    entry_from_row,
    may_read,
    membership_changes,
)

_T = TypeVar("_T")

BATCH = 1000  # events folded at a time when the view catches up
CATCH_UP = 1000  # at most this many events a view missed are folded inside one append
FOLD_SECONDS = 0.5  # a fold's transactions last about this long (a first fold pauses between)
_IN_CHUNK = 512  # ids per IN (...) clause (a power of two: see _padded)
_VIEW = "view_"  # after the log's table prefix: the served view's tables
_STAGING = "view_next_"  # + a random part: the tables a replay fills beside it (one each)
_POSITION = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # the rowid on SQLite
_ID = sa.String(512)
# Compared byte by byte, so that a prefix's namespaces lie in one range (see text_range).
_NAMESPACE = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


@dataclass(frozen=True)
class _Tables:
    metadata: sa.MetaData
    memories: sa.Table
    readers: sa.Table
    members: sa.Table
    state: sa.Table


def _tables(prefix: str) -> _Tables:
    metadata = sa.MetaData()
    memories = sa.Table(
        f"{prefix}memories", metadata,
        sa.Column("position", _POSITION, primary_key=True, autoincrement=False),
        sa.Column("memory_id", _ID, nullable=False),
        *(sa.Column(name, _ID) for name in SCOPE_NAMES),
        sa.Column("entry", sa.LargeBinary, nullable=False),
        sa.Column("namespace", _NAMESPACE, nullable=False, server_default=""),
        sa.Column("key", _ID),
        sa.UniqueConstraint("memory_id", name=f"{prefix}memory_id"),
    )
    for name in SCOPE_NAMES:
        sa.Index(f"{prefix}memories_{name}", memories.c[name], memories.c.position)
    sa.Index(f"{prefix}memories_key", memories.c.namespace, memories.c.key)
    readers = sa.Table(
        f"{prefix}readers", metadata,
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("principal", sa.Text, primary_key=True),
        sqlite_with_rowid=False,
    )
    sa.Index(f"{prefix}readers_principal", readers.c.principal, readers.c.position)
    members = sa.Table(
        f"{prefix}members", metadata,
        sa.Column("group_id", _ID, primary_key=True),
        sa.Column("agent_id", _ID, primary_key=True),
        sa.Column("admin", sa.Boolean, nullable=False),
        sqlite_with_rowid=False,
    )
    sa.Index(f"{prefix}members_agent", members.c.agent_id)
    state = sa.Table(
        f"{prefix}state", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("checkpoint", sa.BigInteger, nullable=False),
        sa.Column("log_id", _ID),
    )
    return _Tables(metadata, memories, readers, members, state)


def _padded(ids: Sequence[str]) -> tuple[int, dict[str, str]]:
    """``ids`` as the parameters ``i0, i1, ...`` of an IN list whose length is the next power
    of two (the last id repeated), so that few statements serve every length."""
    size = 1 << (len(ids) - 1).bit_length()
    return size, {f"i{k}": ids[min(k, len(ids) - 1)] for k in range(size)}


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start:start + _IN_CHUNK]


# --- the entry blob -------------------------------------------------------------------------------
#
# A row's entry is the msgpack array of its fields (entry_row), except that the permissions and
# the namespace are each a msgpack bin holding their packed array: a read turns each into its
# tuple by one lookup in a cache of the few distinct ones (checked once, when first met), so
# that building an entry costs one unpackb and three lookups, not lists made into tuples and
# checked again on every read. Rows written before (the plain entry_row) still load.

_READERS_AT = ENTRY_FIELDS.index("readable_by")
_WRITERS_AT = ENTRY_FIELDS.index("writable_by")
_NAMESPACE_AT = ENTRY_FIELDS.index("namespace")
_EMBEDDING_AT = ENTRY_FIELDS.index("embedding")
_CACHED = 65536  # distinct packed lists remembered (then the cache starts afresh)
_principals_read: dict[bytes, tuple[str, ...]] = {}
_namespaces_read: dict[bytes, Namespace] = {}
_unpack = msgpack.unpackb
_new_entry = tuple.__new__
# The fast path of _entry spells these out (constants are read faster than names).
assert (_READERS_AT, _WRITERS_AT, _NAMESPACE_AT, _EMBEDDING_AT, len(ENTRY_FIELDS)) == (
    14, 15, 17, 18, 19)


@functools.lru_cache(maxsize=4096)
def _packed(items: tuple[str, ...]) -> bytes:
    return encode(items)


def _blob(entry: MemoryEntry) -> bytes:
    """``entry`` as the view stores it (see above)."""
    row = list(entry)
    row[_READERS_AT] = _packed(entry.readable_by)
    row[_WRITERS_AT] = _packed(entry.writable_by)
    row[_NAMESPACE_AT] = _packed(entry.namespace)
    return encode(row)


def _entry(blob: bytes) -> MemoryEntry:
    """Inverse of :func:`_blob` (and of ``encode(entry_row(entry))``, as rows were written
    before): the fast path, for the packed lists read before."""
    row = _unpack(blob, strict_map_key=False)
    try:
        if len(row) == 19:
            row[14] = _principals_read[row[14]]
            row[15] = _principals_read[row[15]]
            row[17] = _namespaces_read[row[17]]
            if row[18] is not None:
                row[18] = tuple(row[18])  # the vector, checked when written
            return _new_entry(MemoryEntry, row)
    except (KeyError, TypeError):  # met first, or a plain row, or not an entry at all
        pass
    return _entry_read_first(row)


def _entry_read_first(row: Any) -> MemoryEntry:
    """:func:`_entry` for a row whose packed lists are not all cached yet (they are then: the
    fast path may have turned some into their tuples already), or a row of another form
    (:func:`~projections.fold.entry_from_row`)."""
    if isinstance(row, list) and len(row) == _EMBEDDING_AT:
        row.append(None)  # packed before entries kept a vector
    kinds = {type(row[at]) for at in (_READERS_AT, _WRITERS_AT, _NAMESPACE_AT)} \
        if isinstance(row, list) and len(row) == len(ENTRY_FIELDS) else set()
    if not kinds or not kinds <= {bytes, tuple}:
        return entry_from_row(row)
    if isinstance(row[_EMBEDDING_AT], list):
        row[_EMBEDDING_AT] = tuple(row[_EMBEDDING_AT])
    for at in (_READERS_AT, _WRITERS_AT):
        if type(row[at]) is bytes:
            row[at] = _remember(_principals_read, row[at], _read_principals)
    if type(row[_NAMESPACE_AT]) is bytes:
        row[_NAMESPACE_AT] = _remember(_namespaces_read, row[_NAMESPACE_AT], _read_namespace)
    return _new_entry(MemoryEntry, row)


def _remember(cache: dict[bytes, _T], packed: bytes, read: Callable[[bytes], _T]) -> _T:
    found = cache.get(packed)
    if found is None:
        if len(cache) >= _CACHED:
            cache.clear()
        found = cache[packed] = read(packed)
    return found


def _read_principals(packed: bytes) -> tuple[str, ...]:
    """Packed principals as the fold reads them: unreadable ones allow nobody."""
    try:
        return stored_principals(decode(packed)) or ()
    except ValueError:  # not msgpack (msgpack's errors are ValueErrors)
        return ()


def _read_namespace(packed: bytes) -> Namespace:
    try:
        return stored_namespace(decode(packed))
    except ValueError:
        return ()


class SQLReadModel(ReadModel):
    """The view of a log in ``log``'s database (see the module docstring).

    On its own it is a read model like any other, caught up by a projector (and it may follow
    any log); kept by ``log`` (:func:`kept_view`) it is also applied inside every append
    through that log object. ``close_log`` closes ``log`` with the model (a model opened by
    URL owns its log).

    Statements are compiled once for the dialect and run on the DB-API cursor, so that a read
    of many rows or an append pays no per-row cost of SQLAlchemy's.
    """

    def __init__(self, log: SQLEventLog, *, close_log: bool = False,
                 _tables_name: str = _VIEW) -> None:
        self._log = log
        self._engine = log.engine
        self._dialect = self._engine.dialect
        self._close_log = close_log
        self._staging = _tables_name.startswith(_STAGING)
        self._prefix = log.table_prefix + _tables_name
        self._t = _tables(self._prefix)
        self._compiled: dict[tuple[object, ...], Statement] = {}
        # Kept by the log: the head applied by this transaction's apply_in calls, and the
        # highest position applied in a transaction that committed (see known_checkpoint).
        self._applying = self._known = 0
        with self._engine.connect() as conn:
            present = sa.inspect(conn).has_table(self._t.state.name)
            # A view made before memories had keys is folded again, with them.
            outdated = present and "namespace" not in {
                c["name"] for c in sa.inspect(conn).get_columns(self._t.memories.name)}
        if not present or outdated:
            with log.write_transaction() as conn:
                if outdated:  # made before keys: start afresh
                    self._drop(conn)
                self._create(conn)

    @property
    def log(self) -> SQLEventLog:
        """The log in whose database the view lives."""
        return self._log

    # --- tables ------------------------------------------------------------------------------

    def _create(self, conn: Connection) -> None:
        """Make the tables and their forget trigger if missing; a replay's twin records its
        content table in the log for every redaction to scrub, as a kept view does."""
        if sa.inspect(conn).has_table(self._t.state.name):
            return
        self._t.metadata.create_all(conn)
        conn.execute(sa.insert(self._t.state), {"id": 1, "checkpoint": 0, "log_id": None})
        if self._staging:
            self._log.record_content_tables(conn, self.content_tables)
        quote = conn.dialect.identifier_preparer.quote
        prefix = self._log.table_prefix
        events, meta = quote(f"{prefix}events"), quote(f"{prefix}meta")
        memories, readers = quote(self._t.memories.name), quote(self._t.readers.name)
        trigger, state = quote(self._trigger_name), quote(self._t.state.name)
        # Unless the view follows another log: a view of another log keeps its memories.
        log_id = f"(SELECT value FROM {meta} WHERE key = 'log_id')"
        ours = f"COALESCE((SELECT log_id FROM {state}), {log_id}) = {log_id}"
        erase = (f"DELETE FROM {readers} WHERE position IN "
                 f"(SELECT position FROM {memories} WHERE memory_id = NEW.memory_id); "
                 f"DELETE FROM {memories} WHERE memory_id = NEW.memory_id;")
        kind = EventType.MEMORY_FORGOTTEN
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                f"CREATE OR REPLACE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN IF {ours} THEN {erase} END IF; RETURN NULL; END $$")
            conn.exec_driver_sql(
                f"CREATE TRIGGER {trigger} AFTER INSERT ON {events} FOR EACH ROW "
                f"WHEN (NEW.type = '{kind}') EXECUTE FUNCTION {trigger}()")
        else:
            conn.exec_driver_sql(
                f"CREATE TRIGGER {trigger} AFTER INSERT ON {events} "
                f"WHEN NEW.type = '{kind}' AND {ours} BEGIN {erase} END")

    @property
    def _trigger_name(self) -> str:
        return f"{self._prefix}forget"

    def _drop(self, conn: Connection) -> None:
        quote = conn.dialect.identifier_preparer.quote
        trigger = quote(self._trigger_name)
        if conn.dialect.name == "postgresql":
            events = quote(f"{self._log.table_prefix}events")
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger} ON {events}")
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {trigger}()")
        else:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
        self._t.metadata.drop_all(conn)
        if self._staging:
            self._log.record_content_tables(conn, self.content_tables, held=False)

    # --- statements ----------------------------------------------------------------------------

    def _statement(self, key: tuple[object, ...]) -> Statement:
        """The compiled statement named by ``key`` (made on first use)."""
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = compile_for(self._dialect, self._build(key))
        return found

    def _build(self, key: tuple[object, ...]) -> sa.ClauseElement:
        m, r, mb, st = self._t.memories, self._t.readers, self._t.members, self._t.state
        at: sa.BindParameter[Any] = sa.bindparam("at")
        kind = key[0]
        one = st.c.id == sa.literal_column("1")  # the one row
        if kind == "state":
            return sa.select(st.c.checkpoint, st.c.log_id).where(one)
        if kind == "advance":  # the checkpoint moves on only from where the caller expects
            return sa.update(st).where(
                one, st.c.checkpoint == at,
                sa.or_(st.c.log_id.is_(None), st.c.log_id == sa.bindparam("log_id")),
            ).values(checkpoint=sa.bindparam("checkpoint"), log_id=sa.bindparam("log_id"))
        if kind == "present":
            return _table_present(self._dialect)
        if kind == "set state":
            return sa.update(st).where(one).values(
                checkpoint=sa.bindparam("checkpoint"), log_id=sa.bindparam("log_id"))
        if kind == "held":
            return sa.select(m.c.entry).where(m.c.memory_id.in_(_binds(key[1])))
        if kind == "add":
            return sa.insert(m)
        if kind == "update":
            return sa.update(m).where(m.c.position == at).values(entry=sa.bindparam("blob"))
        if kind == "remove":
            return sa.delete(m).where(m.c.position == at)
        if kind == "ungrant":
            return sa.delete(r).where(r.c.position == at)
        if kind == "grant":
            return sa.insert(r)
        if kind == "leave":
            return sa.delete(mb).where(mb.c.group_id == sa.bindparam("g"),
                                       mb.c.agent_id == sa.bindparam("a"))
        if kind == "join":
            return sa.insert(mb)
        if kind == "members":
            return sa.select(mb.c.agent_id, mb.c.admin).where(mb.c.group_id == at)
        if kind == "groups":
            return sa.select(mb.c.group_id, mb.c.admin).where(mb.c.agent_id == at)
        if kind in ("key", "spaces"):
            return self._keyed(key)
        return self._read(key)

    def _read(self, key: tuple[object, ...]) -> sa.Select[Any]:
        """``("read", scope names, agent reads)``, ``("ids", IN size, agent reads)`` or
        ``("under", scope names, agent reads)``: the entries a scope (or a list of ids, or a
        scope under a namespace prefix) selects, for the operator or for an agent."""
        kind, what, agent_reads = key
        m, r = self._t.memories, self._t.readers
        if kind == "ids":
            assert isinstance(what, int)
            stmt = sa.select(m.c.entry).where(m.c.memory_id.in_(_binds(what)))
        else:
            assert isinstance(what, tuple)
            stmt = sa.select(m.c.entry).where(*(m.c[n] == sa.bindparam(n) for n in what))
            if kind == "under":
                stmt = stmt.where(self._under_prefix())
        if agent_reads:  # the agent's principals, from the members table in the same statement
            principals = self._principals()
            if kind != "read" or what:  # probe the readers of each memory selected
                stmt = stmt.where(self._readable())
            else:  # no scope: walk what the agent's principals may read
                stmt = stmt.where(m.c.position.in_(
                    sa.select(r.c.position).where(r.c.principal.in_(principals))))
        return stmt.order_by(m.c.position)

    def _principals(self) -> sa.CompoundSelect:
        """The principals of the agent ``reader`` (bound as ``me`` too), from the members."""
        mb = self._t.members
        return sa.union_all(
            sa.select(sa.literal_column(f"'{EVERYONE}'", sa.Text)),
            sa.select(sa.cast(sa.bindparam("me"), sa.Text)),
            sa.select(sa.literal_column(f"'{GROUP}'", sa.Text) + mb.c.group_id)
            .where(mb.c.agent_id == sa.bindparam("reader")))

    def _under_prefix(self) -> sa.ColumnElement[bool]:
        """The namespace is ``ns`` or lies in ``[low, high)`` (see ``text_range``)."""
        ns = self._t.memories.c.namespace
        return sa.or_(ns == sa.bindparam("ns"),
                      sa.and_(ns >= sa.bindparam("low"), ns < sa.bindparam("high")))

    def _keyed(self, key: tuple[object, ...]) -> sa.Select[Any]:
        """``("key",)``: the first live memory holding a key; ``("spaces", agent reads)``:
        the namespaces under a prefix holding memories (that the agent may read)."""
        m = self._t.memories
        if key[0] == "key":
            return sa.select(m.c.entry).where(
                m.c.namespace == sa.bindparam("ns"), m.c.key == sa.bindparam("key")
            ).order_by(m.c.position)  # one row, unless a foreign log wrote more
        stmt = sa.select(m.c.namespace).distinct().where(self._under_prefix())
        if key[1]:
            stmt = stmt.where(self._readable())
        return stmt

    def _readable(self) -> sa.Exists:
        """The agent ``reader`` may read the memory of the row: one of its principals is among
        the memory's readers. The readers are found by the position alone and then compared
        (``principal || ''`` is no column an index could serve): SQLite would otherwise seek
        the readers once per principal, which took twice as long as the read itself."""
        m, r = self._t.memories, self._t.readers
        compared = r.c.principal + sa.literal_column("''", sa.Text)
        return sa.exists().where(r.c.position == m.c.position,
                                 compared.in_(self._principals()))

    # --- what the log calls when it keeps the view (TransactionView) -------------------------

    @property
    def content_tables(self) -> tuple[str, ...]:
        return (self._t.memories.name,)

    def prepare(self, cursor: Any) -> bool:
        """Under the log's write lock: fold the events the view has not applied (all of them
        the first time) for about :data:`FOLD_SECONDS`, committing the checkpoint with them;
        True once the view is at the head, or follows another log, or is gone."""
        state = self._state_if_present(cursor)
        if state is None:
            return True
        checkpoint, followed = state
        mine = self._log.identity()
        if followed not in (None, mine):
            return True  # the view of another log: a projector refuses it, untouched
        reached, done = self._fold_for(cursor, checkpoint)
        if reached > checkpoint:
            self._set_state(cursor, reached, mine)
        return done

    def _fold_for(self, cursor: Any, after: int) -> tuple[int, bool]:
        """Fold the log's events after ``after`` for about :data:`FOLD_SECONDS` (a batch at
        least, so that every transaction makes progress); the last position folded, and
        whether it is the head."""
        deadline = time.perf_counter() + FOLD_SECONDS
        while True:
            batch = self._log.read_in(cursor, after, BATCH)
            if batch:
                self._fold(cursor, batch)
                after = batch[-1].position
            if len(batch) < BATCH:
                return after, True
            if time.perf_counter() >= deadline:
                return after, False

    def apply_in(self, cursor: Any, events: Sequence[Event]) -> None:
        """Inside the append's transaction: fold ``events`` (just inserted) into the view.
        A view behind the log (appends by processes that do not keep it, a first fold under
        way) is caught up by at most :data:`CATCH_UP` events here, and takes ``events`` only
        if that reaches them; readers' projectors catch up the rest, a batch at a time."""
        mine, first = self._log.identity(), events[0].position
        if not self._present(cursor):
            return  # dropped (by another process, say): appends go on without it
        advanced = self._statement(("advance",)).count(cursor, {
            "at": first - 1, "checkpoint": events[-1].position, "log_id": mine})
        if advanced:  # the view was at the log's head, as it is whenever every writer keeps it
            self._fold(cursor, events)
            self._applying = events[-1].position
            return
        checkpoint, followed = self._state(cursor)
        if followed not in (None, mine) or checkpoint >= first:
            return  # another log's view, or one ahead of the log: a projector sees to it
        reached = self._catch_up(cursor, checkpoint, min(first - 1, checkpoint + CATCH_UP))
        if reached == first - 1:
            self._fold(cursor, events)
            reached = self._applying = events[-1].position
        self._set_state(cursor, reached, mine)

    def ended(self, committed: bool) -> None:
        if committed and self._applying > self._known:
            self._known = self._applying
        self._applying = 0

    def known_checkpoint(self) -> int:
        return self._known

    def stored_with(self, log: EventLog) -> bool:
        return log is self._log

    def fold_in_store(self, log: EventLog, checkpoint: int) -> int | None:
        """Where ``log`` is this view's own: fold what the view lacks in transactions of about
        :data:`FOLD_SECONDS` under the log's write lock, each reading the events itself, once
        (a projector's batch is read, then read again by :meth:`apply`), and committing far
        fewer times; at the head already, nothing. ``None`` where the view is ahead of the
        log, or holds another log's view, or is gone, or is a rebuild's twin: the projector's
        own way then."""
        if log is not self._log or self._staging:
            return None
        head = log.head()
        if checkpoint >= head:  # nothing to fold; ahead of the log: the projector rebuilds
            return checkpoint if checkpoint == head else None
        mine = log.identity()
        while True:
            with log.write_transaction(derived=True) as conn:
                cursor = conn.connection.cursor()
                state = self._state_if_present(cursor)
                if state is None or state[1] not in (None, mine):
                    return None
                reached, done = self._fold_for(cursor, state[0])
                if reached > state[0]:
                    self._set_state(cursor, reached, mine)
            self.changed.notify()
            if done:
                return reached

    # --- folding, in a transaction holding the log's write lock ------------------------------

    def _present(self, cursor: Any) -> bool:
        """Whether the view's tables are there (a dropped view's are not)."""
        name = self._t.state.name
        if self._dialect.name == "postgresql":  # to_regclass reads a name as SQL would
            name = self._dialect.identifier_preparer.quote(name)
        return bool(self._statement(("present",)).run(cursor, {"name": name}))

    def _state_if_present(self, cursor: Any) -> tuple[int, str | None] | None:
        return self._state(cursor) if self._present(cursor) else None

    def _state(self, cursor: Any) -> tuple[int, str | None]:
        rows = self._statement(("state",)).run(cursor, {})
        return (0, None) if not rows else (int(rows[0][0]), rows[0][1])

    def _set_state(self, cursor: Any, checkpoint: int, log_id: str | None) -> None:
        self._statement(("set state",)).run(cursor, {"checkpoint": checkpoint, "log_id": log_id})

    def _catch_up(self, cursor: Any, after: int, until: int) -> int:
        """Fold the log's events after ``after`` up to ``until`` in batches; return the last
        position folded. The state is the caller's to write."""
        while after < until:
            batch = self._log.read_in(cursor, after, min(BATCH, until - after))
            if not batch:
                break
            self._fold(cursor, batch)
            after = batch[-1].position
        return after

    def _fold(self, cursor: Any, events: Sequence[Event]) -> None:
        """Fold ``events`` against the rows the view holds now and write the changes."""
        held = self._held(cursor, {e.memory_id for e in events if e.memory_id is not None})
        batch = folded(held, events)
        self._store(cursor, held, batch)
        self._join(cursor, membership_changes(events))

    def _held(self, cursor: Any, memory_ids: Iterable[str]) -> dict[str, MemoryEntry]:
        found: dict[str, MemoryEntry] = {}
        for chunk in _chunks(list(memory_ids)):
            size, values = _padded(chunk)
            for (blob,) in self._statement(("held", size)).run(cursor, values):
                entry = _entry(blob)
                found[entry.memory_id] = entry
        return found

    def _store(self, cursor: Any, held: dict[str, MemoryEntry], batch: Sequence[Change]) -> None:
        """Write the entries after ``batch`` over the rows ``held`` (those the view holds for
        the memories it changes)."""
        gone: list[dict[str, Any]] = []  # positions whose rows go (their readers too)
        regranted: list[dict[str, Any]] = []  # positions whose readers change
        added: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        granted: list[dict[str, Any]] = []
        for change in batch:
            old, new = held.get(change.memory_id), change.after
            if old is not None and (new is None or new.position != old.position):
                gone.append({"at": old.position})  # ended, or written again elsewhere
                old = None
            if new is None:
                continue
            blob = _blob(new)
            if old is None:
                added.append({"position": new.position, "memory_id": new.memory_id,
                              "agent_id": new.agent_id, "group_id": new.group_id,
                              "context_id": new.context_id, "entry": blob,
                              "namespace": namespace_text(new.namespace), "key": new.key})
            else:
                updated.append({"at": new.position, "blob": blob})
                if old.readable_by == new.readable_by:
                    continue
                regranted.append({"at": new.position})
            granted += [{"position": new.position, "principal": p} for p in new.readable_by]
        self._statement(("ungrant",)).run_many(cursor, gone + regranted)
        self._statement(("remove",)).run_many(cursor, gone)
        self._statement(("add",)).run_many(cursor, added)
        self._statement(("update",)).run_many(cursor, updated)
        self._statement(("grant",)).run_many(cursor, granted)

    def _join(self, cursor: Any, memberships: Sequence[MembershipChange]) -> None:
        self._statement(("leave",)).run_many(
            cursor, [{"g": c.group_id, "a": c.agent_id} for c in memberships])
        self._statement(("join",)).run_many(
            cursor, [{"group_id": c.group_id, "agent_id": c.agent_id, "admin": c.admin}
                     for c in memberships if c.admin is not None])

    def _check_log(self, followed: str | None) -> str | None:
        """The log to record after a commit by a projector; :class:`LogMismatchError` if the
        view holds another log's."""
        if self.log_id is None:
            return followed
        if followed not in (None, self.log_id):
            raise LogMismatchError(self.log_id, followed)
        return self.log_id

    # --- the ReadModel interface: writing ----------------------------------------------------

    def checkpoint(self) -> int:
        return self._with_cursor(self._state)[0]

    def followed_log(self) -> str | None:
        return self._with_cursor(self._state)[1]

    def apply(self, events: Sequence[Event]) -> int:
        """Fold the events after the checkpoint in one write transaction, against the rows
        read in it (so that projectors and kept appends never apply an event twice). Events
        of the log in the view's own database are read again inside that transaction, under
        the log's lock: a payload that a forget erased after the projector read it never
        comes back into the view's pages after the forget scrubbed them."""
        start = self.checkpoint()
        if not any(e.position > start for e in events):
            return start  # nothing new: no write lock taken
        with self._log.write_transaction(derived=True) as conn:
            cursor = conn.connection.cursor()
            start, followed = self._state(cursor)
            fresh = [e for e in events if e.position > start]
            if not fresh:
                return start
            if fresh[0].position != start + 1:
                raise CheckpointConflictError(fresh[0].position - 1, start)
            log_id = self._check_log(followed)
            if log_id == self._log.identity():
                fresh = self._log.read_in(cursor, start, len(fresh))
                if not fresh:
                    return start
            self._fold(cursor, fresh)
            self._set_state(cursor, fresh[-1].position, log_id)
        self.changed.notify()
        return fresh[-1].position

    def commit(self, changes: Sequence[Change], expected_checkpoint: int, checkpoint: int,
               events: Sequence[Event] = (),
               memberships: Sequence[MembershipChange] = ()) -> None:
        with self._log.write_transaction(derived=True) as conn:
            cursor = conn.connection.cursor()
            found, followed = self._state(cursor)
            if found != expected_checkpoint:
                raise CheckpointConflictError(expected_checkpoint, found)
            log_id = self._check_log(followed)
            self._store(cursor, self._held(cursor, {c.memory_id for c in changes}), changes)
            self._join(cursor, memberships)
            self._set_state(cursor, checkpoint, log_id)
        self.changed.notify()

    def clear(self) -> None:
        with self._log.write_transaction(derived=True) as conn:
            self._empty(conn)
        self.changed.notify()

    def _empty(self, conn: Connection) -> None:
        self._known = 0
        for table in (self._t.readers, self._t.memories, self._t.members):
            conn.execute(sa.delete(table))
        self._set_state(conn.connection.cursor(), 0, None)

    def drop(self) -> None:
        """Delete the view's tables (and its trigger). Processes that keep it must be closed
        first: their appends would no longer find it."""
        self._known = 0
        with self._log.write_transaction() as conn:
            self._drop(conn)

    def staging(self) -> SQLReadModel:
        """An empty twin in tables of its own, which a replay fills while this view serves;
        :meth:`switch_to` copies it over in one transaction."""
        return SQLReadModel(self._log, _tables_name=f"{_STAGING}{uuid.uuid4().hex[:8]}_")

    def switch_to(self, staged: ReadModel, *, force: bool = False) -> bool:
        if not isinstance(staged, SQLReadModel) or not staged._staging \
                or staged._log is not self._log:
            raise ValueError("switch_to takes a model made by this model's staging()")
        with self._log.write_transaction(derived=True) as conn:
            cursor = conn.connection.cursor()
            checkpoint, followed = self._state(cursor)
            staged_checkpoint, staged_log = staged._state(cursor)
            if not force:
                if followed not in (None, staged_log) and staged_log:
                    raise LogMismatchError(staged_log, followed)
                if checkpoint > staged_checkpoint:
                    return False
            self._empty(conn)
            for mine, theirs in ((self._t.memories, staged._t.memories),
                                 (self._t.readers, staged._t.readers),
                                 (self._t.members, staged._t.members)):
                conn.execute(sa.insert(mine).from_select(list(mine.c.keys()),
                                                         sa.select(*theirs.c)))
            self._set_state(cursor, staged_checkpoint, staged_log)
            staged._empty(conn)
        self.changed.notify()
        return True

    def close(self) -> None:
        """A staging twin deletes its tables; a model opened by URL closes its log."""
        if self._staging:
            with self._log.write_transaction() as conn:
                self._drop(conn)
        if self._close_log:
            self._log.close()

    # --- the ReadModel interface: reading ----------------------------------------------------

    def _with_cursor(self, read: Callable[[Any], _T]) -> _T:
        """``read(cursor)`` on the calling thread's own connection to the log's database,
        which the log's reads share (:class:`~memswarm_es.log.readers.ThreadReaders`)."""
        return self._log.readers.run(read)

    @staticmethod
    def _reader(values: dict[str, Any], reader: str | None) -> dict[str, Any]:
        if reader is not None:
            values["reader"], values["me"] = reader, agent(reader)
        return values

    def read_scope(self, scope: Scope, reader: str | None = None) -> list[MemoryEntry]:
        parts = scope.parts()
        stmt = self._statement(("read", tuple(name for name, _ in parts), reader is not None))
        values = self._reader(dict(parts), reader)
        return [_entry(blob) for (blob,) in self._with_cursor(lambda c: stmt.run(c, values))]

    def get_many(self, memory_ids: Iterable[str],
                 reader: str | None = None) -> dict[str, MemoryEntry]:
        ids = list(dict.fromkeys(memory_ids))

        def read(cursor: Any) -> dict[str, MemoryEntry]:
            found: dict[str, MemoryEntry] = {}
            for chunk in _chunks(ids):
                size, values = _padded(chunk)
                stmt = self._statement(("ids", size, reader is not None))
                for (blob,) in stmt.run(cursor, self._reader(values, reader)):
                    entry = _entry(blob)
                    found[entry.memory_id] = entry
            return found

        return self._with_cursor(read) if ids else {}

    def get_by_key(self, namespace: Namespace, key: str,
                   reader: str | None = None) -> MemoryEntry | None:
        stmt = self._statement(("key",))
        values = {"ns": namespace_text(namespace), "key": key}
        rows = self._with_cursor(lambda c: stmt.run(c, values))
        entry = _entry(rows[0][0]) if rows else None
        if entry is None or reader is None:
            return entry
        return entry if may_read(entry, principals_of(reader, self.groups_of(reader))) else None

    def read_namespace(self, scope: Scope, prefix: Namespace, reader: str | None = None,
                       first: int | None = None) -> list[MemoryEntry]:
        if not prefix:
            return self.read_scope(scope, reader)[:first]
        parts = scope.parts()
        stmt = self._statement(("under", tuple(name for name, _ in parts), reader is not None))
        values = self._reader(_prefix_values(prefix) | dict(parts), reader)

        def read(cursor: Any) -> list[Any]:
            cursor.execute(stmt.sql, stmt.params(values))
            return cursor.fetchall() if first is None else cursor.fetchmany(first)

        return [_entry(blob) for (blob,) in self._with_cursor(read)]

    def namespaces_held(self, prefix: Namespace, reader: str | None = None) -> set[Namespace]:
        stmt = self._statement(("spaces", reader is not None))
        values = self._reader(_prefix_values(prefix), reader)
        rows = self._with_cursor(lambda c: stmt.run(c, values))
        return {namespace_from_text(text) for (text,) in rows}

    def members(self, group_id: str) -> dict[str, bool]:
        stmt = self._statement(("members",))
        rows = self._with_cursor(lambda c: stmt.run(c, {"at": group_id}))
        return {agent_id: bool(admin) for agent_id, admin in rows}

    def groups_of(self, agent_id: str) -> dict[str, bool]:
        stmt = self._statement(("groups",))
        rows = self._with_cursor(lambda c: stmt.run(c, {"at": agent_id}))
        return {group_id: bool(admin) for group_id, admin in rows}


def _prefix_values(prefix: Namespace) -> dict[str, str]:
    low, high = text_range(prefix)
    return {"ns": namespace_text(prefix), "low": low, "high": high}


def _table_present(dialect: sa.Dialect) -> sa.Select[Any]:
    """A statement with a row if the table named ``name`` exists (one that fails on a missing
    table would spoil a PostgreSQL transaction)."""
    name: sa.BindParameter[Any] = sa.bindparam("name")
    if dialect.name == "postgresql":
        return sa.select(sa.literal_column("1")).where(
            sa.func.to_regclass(sa.cast(name, sa.Text)).is_not(None))
    master = sa.table("sqlite_master", sa.column("type"), sa.column("name"))
    return sa.select(sa.literal_column("1")).where(
        master.c.type == sa.literal_column("'table'"), master.c.name == name)


def _binds(size: object) -> list[sa.BindParameter[Any]]:
    assert isinstance(size, int)
    return [sa.bindparam(f"i{k}") for k in range(size)]


def kept_view(log: SQLEventLog, *, close_log: bool = False) -> SQLReadModel:
    """The SQL view of ``log`` in its own database, kept by it from now on: folded once if
    the database holds none yet (or caught up, if appends that did not keep it left it
    behind), then applied inside every append and import through ``log``."""
    view = SQLReadModel(log, close_log=close_log)
    log.keep_view(view)
    return view


def open_url(url: str, *, prefix: str = "memswarm") -> SQLReadModel:
    """``sql+<log url>`` (``sql+sqlite:///swarm.db``, ``sql+postgresql+psycopg://...``): the
    SQL view in the database of the log at ``<log url>``, whose tables are named
    ``<prefix>_...`` (the log's default), kept by the log object it opens (made if missing)."""
    scheme, found, _ = url.partition("://")
    if not scheme.startswith("sql+") or not found:
        raise InvalidInputError(f"{url}: a SQL view is named sql+<log url>, such as "
                                "sql+sqlite:///swarm.db")
    try:
        log = SQLEventLog(url[len("sql+"):], table_prefix=f"{prefix}_")
    except sa.exc.ArgumentError as exc:
        raise InvalidInputError(f"{url}: {exc}") from exc
    try:
        return kept_view(log, close_log=True)
    except BaseException:
        log.close()
        raise
