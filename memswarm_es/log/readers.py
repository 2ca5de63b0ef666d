"""Connections of each thread's own, for reads: a pool's checkout and return cost more than a
read of a few rows (the log's reads and the SQL view's, on every read of a memory)."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

_T = TypeVar("_T")


class ThreadReaders:
    """Runs reads on a connection of the calling thread's own, made by ``engine``'s pool (with
    every setting the pool makes) and then taken out of it. The connection commits each
    statement by itself: each reads one snapshot, on SQLite and on PostgreSQL alike, and none
    holds a transaction open between reads. It is closed by :meth:`close`, or when its thread
    ends; a process forked from this one opens its own. Where the pool keeps one connection
    per thread itself (SQLite in memory, whose one connection is the database), or once
    closed, reads take a pooled connection."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._own = isinstance(engine.pool, sa.pool.QueuePool)
        self._postgres = engine.dialect.name == "postgresql"
        self._error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._local = threading.local()
        self._open: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    def run(self, read: Callable[[Any], _T]) -> _T:
        """``read(cursor)``, outside SQLAlchemy's row handling."""
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None or reader.pid != os.getpid():
            reader = self._reader()
            if reader is None:
                return self._pooled(read)
        try:
            return read(reader.cursor)
        except self._error:  # a broken connection (a restarted server, say) goes
            self._local.reader = None
            reader.close()
            raise

    def stamp(self) -> tuple[int, int] | None:
        """A value that changes whenever any other connection commits to the database, read
        on the calling thread's own connection (SQLite's ``data_version``); ``None`` where
        there is none to read it on (reads take pooled connections) or the database cannot
        tell. Only comparable with an earlier stamp of the same thread."""
        if self._postgres:
            return None
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None or reader.pid != os.getpid():
            reader = self._reader()
            if reader is None:
                return None
        try:  # (every row fetched: a statement left unfinished would keep the connection
            # from closing, and its WAL from being checkpointed then)
            version = reader.cursor.execute("PRAGMA data_version").fetchall()[0][0]
        except self._error:  # a broken connection goes, as in run
            self._local.reader = None
            reader.close()
            raise
        return id(reader), int(version)

    def close(self) -> None:
        """Close every thread's connection; later reads take pooled ones."""
        with self._lock:
            self._closed = True
            readers = list(self._open)
            self._local = threading.local()  # no thread reads on a closed one again
        for reader in readers:
            reader.close()

    def _reader(self) -> _Reader | None:
        with self._lock:
            if not self._own or self._closed:
                return None
        pooled = self._engine.raw_connection()
        pooled.detach()
        raw: Any = pooled.dbapi_connection
        if self._postgres:
            raw.autocommit = True  # as SQLite's connections are (isolation_level None)
        reader = _Reader(raw)
        with self._lock:
            closed = self._closed
            if not closed:
                self._open.add(reader)
        if closed:  # closed meanwhile
            reader.close()
            return None
        self._local.reader = reader
        return reader

    def _pooled(self, read: Callable[[Any], _T]) -> _T:
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                return read(cursor)
            finally:
                cursor.close()
        finally:
            raw.close()


class _Reader:
    """A thread's own connection (closed with its :class:`ThreadReaders`, or when its thread
    ends: the thread's locals go, and this with them)."""

    __slots__ = ("__weakref__", "cursor", "pid", "raw")

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.cursor = raw.cursor()
        self.pid = os.getpid()

    def close(self) -> None:
        if self.pid == os.getpid():  # a forked process leaves its parent's connection be
            with contextlib.suppress(Exception):
                self.raw.close()

    def __del__(self) -> None:
        self.close()
