"""Forget reaches the bytes of the files: a process SIGKILLed between the forget event and the
redaction leaves work that the next open (or the next forget) finishes; a reader blocking the
SQLite WAL checkpoint is reported, not ignored; PostgreSQL's pages lose the old row versions;
the SQL view kept in the log's database keeps no byte either, whoever forgets."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from memswarm_es import MemoryNotFoundError, SQLiteSharedMemory
from memswarm_es.errors import RedactionIncompleteError
from memswarm_es.events import EventType
from memswarm_es.log import SQLEventLog
from memswarm_es.log import sql as sql_log
from memswarm_es.memory import PostgresSharedMemory, SharedMemory
from projections.in_memory import InMemoryReadModel


def needles(marker: str) -> dict[str, bytes]:
    """The forms a forgotten value must not be found in."""
    raw = marker.encode()
    return {"marker": raw, "base64": base64.b64encode(raw),
            "sha256 hex": hashlib.sha256(raw).hexdigest().encode(),
            "sha256": hashlib.sha256(raw).digest()}


def found_in(blobs: dict[str, bytes], marker: str) -> list[tuple[str, str]]:
    """(where, which form) of every needle of ``marker`` in ``blobs``."""
    return [(where, form) for where, data in blobs.items()
            for form, needle in needles(marker).items() if needle in data]


def sqlite_files(path: Path) -> dict[str, bytes]:
    """Every file SQLite keeps for the database: the file, its -wal and -shm."""
    return {str(p): p.read_bytes() for p in sorted(path.parent.glob(path.name + "*"))}


KILLED_FORGET = textwrap.dedent("""
    import os, signal, sys
    from memswarm_es import SQLiteSharedMemory
    from memswarm_es.log.sql import SQLEventLog

    path, memory_id = sys.argv[1:]
    mem = SQLiteSharedMemory(path, snapshot_every=1)
    mem.as_of(mem.log.head()).read_scope()  # an unscoped read folds, saving snapshots
    # The forget event is committed; die for real before the redaction starts.
    SQLEventLog.redact = lambda self, positions: os.kill(os.getpid(), signal.SIGKILL)
    mem.forget(memory_id, reason="erasure")
""")


@pytest.mark.parametrize("finisher", ["open", "later forget"])
def test_a_forget_killed_before_its_redaction_is_finished(finisher: str, tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    marker = f"killed-{uuid.uuid4().hex}"
    mem = SQLiteSharedMemory(str(path))
    m = mem.write_scope(marker, metadata={"agent_id": "a", "note": marker})
    mem.update(m, marker + " v2")
    other = mem.write_scope("unrelated", metadata={"agent_id": "b"})
    mem.close()
    survivor = SQLiteSharedMemory(str(path)) if finisher == "later forget" else None

    done = subprocess.run([sys.executable, "-c", KILLED_FORGET, str(path), m],
                          capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    peek = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    (kind,) = peek.execute("SELECT type FROM memswarm_events ORDER BY position DESC LIMIT 1"
                           ).fetchone()
    (snapshots,) = peek.execute("SELECT count(*) FROM memswarm_snapshots").fetchone()
    peek.close()
    assert kind == EventType.MEMORY_FORGOTTEN and snapshots > 0
    assert found_in(sqlite_files(path), marker)  # the kill left the content behind

    if survivor is None:
        reopened = SQLEventLog(f"sqlite:///{path}", create=False)  # a reader's open
        reopened.close()
    else:
        survivor.forget(other, reason="another erasure")
        survivor.close()
    assert found_in(sqlite_files(path), marker) == []
    after = SQLiteSharedMemory(str(path))
    assert after.verify().ok
    with pytest.raises(MemoryNotFoundError):
        after.get(m)
    assert [v.redacted for v in after.history(m)] == [True, True, False]
    after.close()


def test_a_reader_blocking_the_wal_checkpoint_is_reported_and_finished_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_log, "_CHECKPOINT_TRIES", 2)  # bounded retries; keep the test short
    path = tmp_path / "blocked.db"
    marker = f"blocked-{uuid.uuid4().hex}"
    mem = SQLiteSharedMemory(str(path))
    m = mem.write_scope(marker, metadata={"agent_id": "a"})
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM memswarm_events").fetchone()  # a read transaction

    with pytest.raises(RedactionIncompleteError) as info:
        mem.forget(m, reason="erasure")
    assert str(path) in info.value.places and f"{path}-wal" in info.value.places
    with pytest.raises(MemoryNotFoundError):  # the forget is recorded all the same
        mem.get(m)
    assert all(e.payload is None for e in mem.log.read()[:1])  # and the table holds no payload
    with sqlite3.connect(path) as peek:  # the reader still sees the log before the forget
        assert peek.execute("SELECT count(*) FROM memswarm_forgets WHERE pending"
                            ).fetchone() == (1,)
    peek.close()

    reader.execute("COMMIT")
    reader.close()
    position = mem.log.head()
    assert mem.forget(m, reason="erasure") == position  # finishes, appends nothing
    assert found_in(sqlite_files(path), marker) == []
    mem.close()


def pg_pages(engine: sa.Engine, table: str) -> dict[str, bytes]:
    """The raw pages of ``table`` and of its TOAST table, as the server holds them."""
    with engine.connect() as conn:
        conn.exec_driver_sql("CHECKPOINT")
        toast: str = conn.execute(sa.text("SELECT reltoastrelid::regclass::text FROM pg_class "
                                          "WHERE oid = CAST(:t AS regclass)"),
                                  {"t": table}).scalar_one()
        pages: dict[str, bytes] = {}
        for relation in (table, toast):
            size: int = conn.execute(sa.text("SELECT pg_relation_size(CAST(:r AS regclass))"),
                                     {"r": relation}).scalar_one()
            pages[relation] = b"".join(
                conn.execute(sa.text("SELECT get_raw_page(:r, :b)"),
                             {"r": relation, "b": block}).scalar_one()
                for block in range(size // 8192))
        return pages


def test_postgres_pages_lose_the_old_row_versions(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pageinspect")
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    log = SQLEventLog(postgres_url, table_prefix=prefix)
    mem = SharedMemory(log, InMemoryReadModel())
    small = f"pg-{uuid.uuid4().hex}"
    large = f"pg-large-{uuid.uuid4().hex}"
    a = mem.write_scope(small, metadata={"agent_id": "a"})
    incompressible = base64.b64encode(os.urandom(12_000)).decode()  # stored in TOAST, as is
    b = mem.write_scope(large + incompressible, metadata={"agent_id": "a"})
    for i in range(20):
        mem.write_scope(f"filler {i}", metadata={"agent_id": "b"})
    before = pg_pages(engine, f"{prefix}events")
    assert found_in(before, small) and found_in(before, large)

    mem.forget(a, reason="erasure")
    mem.forget(b, reason="erasure")

    after = pg_pages(engine, f"{prefix}events")
    assert found_in(after, small) == [] and found_in(after, large) == []
    assert mem.verify().ok
    mem.close()
    engine.dispose()


def test_an_older_postgres_transaction_holding_the_rows_is_reported(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pageinspect")
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    mem = SharedMemory(SQLEventLog(postgres_url, table_prefix=prefix), InMemoryReadModel())
    marker = f"pg-held-{uuid.uuid4().hex}"
    m = mem.write_scope(marker, metadata={"agent_id": "a"})
    holder = sa.create_engine(postgres_url).connect()  # a reader with an open snapshot
    holder.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    holder.exec_driver_sql(f"SELECT count(*) FROM {prefix}events").scalar()

    with pytest.raises(RedactionIncompleteError) as info:
        mem.forget(m, reason="erasure")
    assert info.value.places == [f"{prefix}events"]
    assert found_in(pg_pages(engine, f"{prefix}events"), marker)  # truly still there

    holder.rollback()
    holder.close()
    position = mem.log.head()
    assert mem.forget(m, reason="erasure") == position  # the pending forget is finished
    assert found_in(pg_pages(engine, f"{prefix}events"), marker) == []
    mem.close()
    engine.dispose()


def test_a_log_from_before_the_forgets_table_gets_its_unfinished_forgets_finished(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    marker = f"old-{uuid.uuid4().hex}"
    mem = SQLiteSharedMemory(str(path))
    m = mem.write_scope(marker, metadata={"agent_id": "a"})
    mem.write_scope("unrelated", metadata={"agent_id": "b"})
    mem.forget(m, reason="erasure")
    mem.close()
    with sqlite3.connect(path) as db:  # as an earlier version left it: no forgets table, and
        db.execute("DROP TRIGGER memswarm_record_forget")  # a forget killed before redacting
        db.execute("DROP TABLE memswarm_forgets")
        db.execute("UPDATE memswarm_events SET payload = ? WHERE position = 1",
                   (marker.encode(),))
    db.close()
    assert found_in(sqlite_files(path), marker)

    SQLEventLog(f"sqlite:///{path}", create=False).close()  # the open upgrades and finishes
    assert found_in(sqlite_files(path), marker) == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT position, pending FROM memswarm_forgets").fetchall() == [(3, 0)]
    db.close()


# --- the SQL view kept in the log's own database ------------------------------------------------


def test_the_sqlite_view_keeps_no_byte_of_a_forgotten_memory(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    marker = f"view-{uuid.uuid4().hex}"
    mem = SQLiteSharedMemory(str(path))
    m = mem.write_scope(marker, metadata={"agent_id": "a", "note": marker})
    mem.sync()  # folded: the update below rewrites the view's row
    mem.update(m, [marker, "v2"], readable_by=["*"])
    keep = mem.write_scope("unrelated", metadata={"agent_id": "b"})
    mem.sync()
    with sqlite3.connect(path) as peek:  # the view holds the content
        (entry,) = peek.execute("SELECT entry FROM memswarm_view_memories WHERE memory_id = ?",
                                (m,)).fetchone()
    peek.close()
    assert marker.encode() in entry
    # Another process, keeping no view, forgets it: the view loses it all the same.
    other = SharedMemory(SQLEventLog(f"sqlite:///{path}"), InMemoryReadModel())
    other.forget(m, reason="erasure")
    other.close()
    assert found_in(sqlite_files(path), marker) == []
    assert [e.memory_id for e in mem.read_scope()] == [keep]
    mem.close()


@pytest.mark.parametrize("forgetter", ["keeping", "plain"])
def test_postgres_view_pages_lose_the_forgotten_rows(postgres_url: str, forgetter: str) -> None:
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pageinspect")
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    mem = PostgresSharedMemory(postgres_url, table_prefix=prefix)
    small = f"pg-view-{uuid.uuid4().hex}"
    large = f"pg-view-large-{uuid.uuid4().hex}"
    a = mem.write_scope(small, metadata={"agent_id": "a"})
    mem.sync()  # folded, so that the update leaves an old row version of the view's row too
    mem.update(a, small + " v2")
    incompressible = base64.b64encode(os.urandom(12_000)).decode()  # stored in TOAST, as is
    b = mem.write_scope(large + incompressible, metadata={"agent_id": "a"})
    for i in range(20):
        mem.write_scope(f"filler {i}", metadata={"agent_id": "b"})
    mem.sync()
    view = f"{prefix}view_memories"
    before = pg_pages(engine, view)
    assert found_in(before, small) and found_in(before, large)

    if forgetter == "keeping":
        mem.forget(a, reason="erasure")
        mem.forget(b, reason="erasure")
    else:  # a process that does not keep the view: its trigger and the recorded table
        plain = SharedMemory(SQLEventLog(postgres_url, table_prefix=prefix), InMemoryReadModel())
        plain.forget(a, reason="erasure")
        plain.forget(b, reason="erasure")
        plain.close()

    after = pg_pages(engine, view)
    assert found_in(after, small) == [] and found_in(after, large) == []
    assert len(mem.read_scope()) == 20
    assert mem.verify().ok
    mem.close()
    engine.dispose()


def test_a_fold_racing_a_forget_brings_no_byte_back(tmp_path: Path) -> None:
    """A reader's projector reads events, a forget erases one of them and scrubs the files,
    then the projector commits what it read: the view folds the events as they are now."""
    path = tmp_path / "race.db"
    marker = f"race-{uuid.uuid4().hex}"
    mem = SQLiteSharedMemory(str(path))
    mem.sync()
    m = mem.write_scope(marker, metadata={"agent_id": "a"})
    keep = mem.write_scope("unrelated", metadata={"agent_id": "b"})
    read_before = mem.log.read()  # what a projector read, before the forget
    other = SharedMemory(SQLEventLog(f"sqlite:///{path}"), InMemoryReadModel())
    other.forget(m, reason="erasure")  # recorded after what was read; scrubs the files
    other.close()
    assert found_in(sqlite_files(path), marker) == []
    mem.read_model.apply(read_before)  # the projector's commit, late
    assert found_in(sqlite_files(path), marker) == []
    assert [e.memory_id for e in mem.read_scope()] == [keep]
    mem.close()


@pytest.mark.parametrize("upkeep", ["read", "append"])
def test_postgres_pages_lose_the_last_written_memory(postgres_url: str, upkeep: str) -> None:
    """The tuples written last sit next to a page's free space: freeing them (a plain VACUUM)
    leaves their bytes there, since no other tuple moves over them. The forget's rewrite
    leaves none, in the log's table or the view's."""
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pageinspect")
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    mem = PostgresSharedMemory(postgres_url, table_prefix=prefix, view_upkeep=upkeep)
    for i in range(20):
        mem.write_scope(f"filler {i}", metadata={"agent_id": "b"})
    mem.sync()
    marker = f"pg-last-{uuid.uuid4().hex}"
    m = mem.write_scope(marker, metadata={"agent_id": "a"})
    mem.update(m, marker + " v2")
    mem.sync()
    tables = [f"{prefix}events", f"{prefix}view_memories"]
    assert all(found_in(pg_pages(engine, t), marker) for t in tables)
    mem.forget(m, reason="erasure")
    assert [found_in(pg_pages(engine, t), marker) for t in tables] == [[], []]
    assert len(mem.read_scope()) == 20 and mem.verify().ok
    mem.close()
    engine.dispose()
