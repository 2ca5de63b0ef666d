"""What Chroma lacks for a shared view: mutual exclusion of projectors, and erasing content.

Chroma has neither transactions nor compare-and-set, so projectors sharing one collection take
turns, each reading the checkpoint, folding its batch and committing while it holds the turn:

- on a ``PersistentClient``, an exclusive ``flock`` on ``<path>/<collection>.lock`` (held by
  the threads and processes of this machine, released by the kernel if a holder dies), and a
  lock per collection within the process;
- on a Chroma server (``HttpClient``), a lease record in the bookkeeping collection: owner and
  expiry, written then read back after a settling pause, so that of two projectors that both
  saw it free only the last writer goes on. This assumes that a lease write lands within
  ``settle`` seconds and that the projectors' clocks agree to well within ``ttl``.

Forgetting: Chroma keeps what was written to a collection in ``chroma.sqlite3`` after a
document is deleted: the upserts in its embeddings queue (text and metadata, until its vector
index is persisted, every 1000 records by default), and the freed pages of its tables and of
the full-text index. :func:`purge_content` scrubs those on a ``PersistentClient``; a server's
files are out of reach (see :data:`SERVER_RESIDUE`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memswarm_es.errors import StorageError
from memswarm_es.waiting import wait_until

logger = logging.getLogger(__name__)

#: What :func:`purge_content` cannot reach on a Chroma server, for operators.
SERVER_RESIDUE = (
    "the Chroma server keeps forgotten text in its own chroma.sqlite3 (embeddings queue and "
    "freed pages) until its operator stops it and scrubs the queue and vacuums the file")

_LEASE_ID = "lease"
_PROCESS_LOCKS: dict[tuple[str, str], threading.RLock] = {}
_PROCESS_LOCKS_LOCK = threading.Lock()


def _process_lock(place: str, name: str) -> threading.RLock:
    with _PROCESS_LOCKS_LOCK:
        return _PROCESS_LOCKS.setdefault((place, name), threading.RLock())


@dataclass(frozen=True)
class Place:
    """Where a client keeps its collections: ``kind`` is ``"persistent"`` (files in
    ``directory``), ``"memory"`` (this process) or ``"server"``."""

    kind: str
    directory: str | None = None


def place_of(client: Any) -> Place:
    """Where ``client`` keeps its collections (read once: chromadb settings objects are
    mutable and may be shared between clients)."""
    settings = client.get_settings()
    if "rust" not in str(settings.chroma_api_impl):
        return Place("server")
    if settings.is_persistent:
        return Place("persistent", str(settings.persist_directory))
    return Place("memory")


class FileGuard:
    """One holder at a time per collection of a persistent directory (threads and processes),
    or of an in-memory client (``directory=None``: threads). Reentrant within a thread."""

    def __init__(self, directory: str | None, name: str, place: str = "") -> None:
        self._path = None if directory is None else os.path.join(directory, f"{name}.lock")
        self._local = _process_lock(place or os.path.realpath(directory or "."), name)
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> None:
        self._local.acquire()
        if self._depth == 0 and self._path is not None:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._depth += 1

    def __exit__(self, *_exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._local.release()

    def close(self) -> None:
        with self._local:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class LeaseGuard:
    """One holder at a time per collection of a Chroma server: a lease record (owner, expiry)
    in the collection's bookkeeping. Reentrant within a thread."""

    def __init__(self, meta: Any, name: str, ttl: float = 30.0, settle: float = 0.05,
                 timeout: float = 120.0) -> None:
        self._meta = meta
        self._owner = uuid.uuid4().hex
        self._local = _process_lock(f"server:{id(meta)}", name)
        self.ttl, self.settle, self.timeout = ttl, settle, timeout
        self._depth = 0

    def _holder(self) -> tuple[str, float]:
        found = self._meta.get(ids=[_LEASE_ID], include=["metadatas"])
        if not found["ids"]:
            return "", 0.0
        meta = found["metadatas"][0]
        return str(meta.get("owner", "")), float(meta.get("expires", 0.0))

    def _write(self, owner: str, expires: float) -> None:
        self._meta.upsert(ids=[_LEASE_ID], embeddings=[[0.0]],
                          metadatas=[{"owner": owner, "expires": expires}])

    def __enter__(self) -> None:
        self._local.acquire()
        if self._depth == 0:
            try:
                self._acquire()
            except BaseException:
                self._local.release()
                raise
        self._depth += 1

    def _acquire(self) -> None:
        if not wait_until(self._take, self.timeout, time.sleep, first=0.01, longest=0.5):
            raise StorageError(f"the projectors' lease is held by {self._holder()[0]!r}; gave "
                               f"up after {self.timeout:g} s")

    def _take(self) -> bool:
        """Write the lease if it is free (or ours, or expired), then read it back after the
        settling pause; True if this guard holds it."""
        owner, expires = self._holder()
        if owner and owner != self._owner and expires >= time.time():
            return False
        self._write(self._owner, time.time() + self.ttl)
        time.sleep(self.settle)
        return self._holder()[0] == self._owner

    def __exit__(self, *_exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._holder()[0] == self._owner:
                self._write("", 0.0)
        finally:
            self._local.release()

    def close(self) -> None:
        """Nothing to release: the lease is given back after each turn."""


def guard_for(place: Place, client: Any, meta: Any, name: str) -> FileGuard | LeaseGuard:
    """The projectors' turn for collection ``name`` of ``client`` (bookkeeping in ``meta``)."""
    if place.kind == "persistent":
        return FileGuard(place.directory, name)
    if place.kind == "memory":  # this process only
        return FileGuard(None, name, place=f"memory:{id(client)}")
    return LeaseGuard(meta, name)


def residue(place: Place) -> str | None:
    """What a forget cannot erase from this Chroma, or ``None`` if it erases all.

    On a ``PersistentClient`` the text goes everywhere; the vectors of forgotten memories (not
    their text) stay in the vector index files, marked deleted, until Chroma reuses or
    rewrites their slots, and in its embeddings queue until Chroma purges it.
    """
    if place.kind == "memory":
        return None
    if place.kind == "server":
        return SERVER_RESIDUE
    return ("the forgotten memories' vectors (not their text) stay in Chroma's vector index "
            "files, marked deleted, and in its embeddings queue until Chroma purges it")


def purge_content(place: Place, docs: Any, memory_ids: Sequence[str]) -> None:
    """Erase what Chroma keeps of the (already deleted) documents ``memory_ids`` of ``docs``.

    On a ``PersistentClient``: blank the text and metadata of their records in Chroma's
    embeddings queue (the vectors stay: the vector index replays them before the deletes),
    merge the full-text index so no deleted term remains, and ``VACUUM`` the file so that no
    freed page keeps a byte. On a server this is out of reach: logged as
    :data:`SERVER_RESIDUE`.
    """
    if place.kind == "server":  # its files are out of reach
        logger.warning("forgotten memories %s: %s", list(memory_ids), SERVER_RESIDUE)
    if place.directory is None:
        return
    path = os.path.join(place.directory, "chroma.sqlite3")
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        conn.execute("PRAGMA secure_delete = ON")
        topic = f"%/{docs.id}"
        for start in range(0, len(memory_ids), 500):
            chunk = list(memory_ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            conn.execute(f"UPDATE embeddings_queue SET metadata = '{{}}' WHERE topic LIKE ? "
                         f"AND id IN ({marks})", [topic, *chunk])
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                     "sql LIKE 'CREATE VIRTUAL TABLE%USING fts5%'").fetchall():
            if re.fullmatch(r"\w+", table):
                conn.execute(f"INSERT INTO {table}({table}) VALUES ('optimize')")
        conn.execute("VACUUM")
    except sqlite3.Error as exc:
        raise StorageError(f"could not scrub forgotten content from {path}: {exc}") from exc
    finally:
        conn.close()
