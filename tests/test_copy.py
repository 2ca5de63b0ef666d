"""Copying logs between stores (SQLite <-> GCS <-> in-process): events as they are, verified
by the target's chain as they arrive, resumable, and the same digests on both sides."""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import pytest
from google.cloud import storage
from hypothesis import given, settings

from memswarm_es import InMemorySharedMemory, MemoryNotFoundError, SQLiteSharedMemory
from memswarm_es.cli import main
from memswarm_es.errors import IntegrityError
from memswarm_es.events import EventType
from memswarm_es.log import EventLog, InMemoryEventLog, SQLEventLog
from memswarm_es.log.copy import copy_log
from memswarm_es.log.gcs import GCSEventLog
from projections.fold import fold


def history(path: Path) -> SQLEventLog:
    mem = SQLiteSharedMemory(str(path))
    ids = [mem.write_scope(f"note {i}", metadata={"agent_id": f"a{i % 2}"}) for i in range(12)]
    mem.update(ids[0], "changed")
    mem.delete(ids[1])
    mem.forget(ids[2], reason="erasure")  # a redacted payload must copy and verify too
    mem.close()
    return SQLEventLog(f"sqlite:///{path}")


def test_sqlite_to_gcs_and_back(tmp_path: Path, gcs_bucket: str, gcs_prefix: str,
                                gcs_client: storage.Client) -> None:
    source = history(tmp_path / "source.db")
    gcs = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    assert copy_log(source, gcs, batch_size=4) == source.head()
    assert gcs.read() == source.read()
    assert gcs.digest() == source.digest() and gcs.verify() == source.head()
    assert gcs.extends(source.digest())
    assert gcs.identity() == source.identity()
    assert GCSEventLog(gcs_bucket, gcs_prefix, gcs_client, create=False
                       ).identity() == source.identity()

    back = SQLEventLog(f"sqlite:///{tmp_path / 'back.db'}")
    assert copy_log(gcs, back) == source.head()
    assert back.read() == source.read() and back.digest() == source.digest()
    assert back.identity() == source.identity()
    assert fold(back.read()).entries == fold(source.read()).entries


def test_a_copy_resumes_where_it_stopped_and_refuses_a_diverged_target(tmp_path: Path) -> None:
    source = history(tmp_path / "source.db")
    target = InMemoryEventLog()
    target.import_events(source.read(0, 5))
    assert copy_log(source, target) == source.head() - 5
    assert copy_log(source, target) == 0
    assert target.digest() == source.digest()

    other = InMemoryEventLog()
    other.import_events(source.read(0, 3))
    mem = SQLiteSharedMemory(str(tmp_path / "other.db"))
    mem.write_scope("a different past", metadata={"agent_id": "x"})
    with pytest.raises(IntegrityError):
        copy_log(mem.log, other)
    mem.close()


def test_import_refuses_gaps_and_broken_links(tmp_path: Path) -> None:
    events = history(tmp_path / "source.db").read()
    target = SQLEventLog(f"sqlite:///{tmp_path / 'target.db'}")
    with pytest.raises(IntegrityError):
        target.import_events(events[1:3])  # does not start at position 1
    forged = [events[0], events[1]._replace(actor="mallory")]
    with pytest.raises(IntegrityError) as info:
        target.import_events(forged)
    assert info.value.position == 2
    assert target.head() == 0


def test_memswarm_copy_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = history(tmp_path / "source.db")
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    assert main(["copy", "--from", f"sqlite:///{tmp_path / 'source.db'}", "--to", url]) == 0
    assert f"copied {source.head()} events" in capsys.readouterr().out
    assert SQLEventLog(url).digest() == source.digest()


# --- a copy keeps nothing the source forgot, and carries the source's identity ---------------

SECRET = "copy-secret-3317 phone 555-0199"


def sqlite_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def leftover(source: EventLog, target: EventLog) -> list[int]:
    """Positions where the target holds a payload that the source redacted, or that belongs to
    a memory with a forget event: the class of content a copy must not keep."""
    forgotten = {e.memory_id for e in target.read() if e.type == EventType.MEMORY_FORGOTTEN}
    theirs = {e.position: e for e in source.read()}
    return [e.position for e in target.read()
            if e.payload is not None and e.type != EventType.MEMORY_FORGOTTEN
            and (theirs[e.position].payload is None or e.memory_id in forgotten)]


@pytest.mark.parametrize("kind", ["sqlite", "in-process"])
def test_a_resumed_copy_redacts_what_the_source_forgot_since(kind: str, tmp_path: Path) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "source.db"))
    m = mem.write_scope(SECRET, metadata={"agent_id": "a", "note": SECRET})
    mem.update(m, SECRET + " v2")
    mem.write_scope("unrelated", metadata={"agent_id": "b"})
    target_path = tmp_path / "target.db"
    target: EventLog = (SQLEventLog(f"sqlite:///{target_path}") if kind == "sqlite"
                        else InMemoryEventLog())
    copy_log(mem.log, target)
    mem.forget(m, reason="erasure")
    assert copy_log(mem.log, target) == 1  # only the forget event is new...
    assert leftover(mem.log, target) == []  # ...and the content it erased is gone here too
    assert target.read() == mem.log.read() and target.verify() == mem.log.head()
    if isinstance(target, SQLEventLog):
        target.close()
        assert SECRET.encode() not in sqlite_bytes(target_path)
    mem.close()


@pytest.mark.parametrize("kind", ["sqlite", "in-process"])
def test_a_copy_taken_between_a_forget_event_and_its_redaction_is_redacted(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "source.db"))
    m = mem.write_scope(SECRET, metadata={"agent_id": "a"})
    target_path = tmp_path / "target.db"
    target: EventLog = (SQLEventLog(f"sqlite:///{target_path}") if kind == "sqlite"
                        else InMemoryEventLog())

    def copy_instead(positions: list[int]) -> int:  # the copy runs while the forget is half done
        copy_log(mem.log, target)
        return 0

    monkeypatch.setattr(mem.log, "redact", copy_instead)
    mem.forget(m, reason="erasure")
    assert target.head() == 2 and leftover(mem.log, target) == []
    if isinstance(target, SQLEventLog):
        target.close()
        assert SECRET.encode() not in sqlite_bytes(target_path)
    mem.close()


OPS = st.lists(st.tuples(st.sampled_from(["write", "update", "delete", "forget", "copy"]),
                         st.integers(0, 20)), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_copies_interleaved_with_forgets_keep_nothing_forgotten(
        ops: list[tuple[str, int]]) -> None:
    mem = InMemorySharedMemory()
    target = InMemoryEventLog()
    ids: list[str] = []
    for op, n in ops:
        try:
            if op == "write" or not ids:
                ids.append(mem.write_scope(f"value {n}", metadata={"agent_id": "a"}))
            elif op == "update":
                mem.update(ids[n % len(ids)], f"value {n} again")
            elif op == "delete":
                mem.delete(ids[n % len(ids)])
            elif op == "forget":
                mem.forget(ids[n % len(ids)], reason="erasure")
            else:
                copy_log(mem.log, target, batch_size=3)
                assert leftover(mem.log, target) == []
        except MemoryNotFoundError:
            pass
    copy_log(mem.log, target, batch_size=3)
    assert leftover(mem.log, target) == [] and target.read() == mem.log.read()


def test_a_copy_into_an_empty_log_carries_the_identity(tmp_path: Path) -> None:
    source = history(tmp_path / "source.db")
    sql_target = SQLEventLog(f"sqlite:///{tmp_path / 'copy.db'}")
    memory_target = InMemoryEventLog()
    for target in (sql_target, memory_target):
        assert target.identity() != source.identity()
        copy_log(source, target)
        assert target.identity() == source.identity()
    sql_target.close()
    assert SQLEventLog(f"sqlite:///{tmp_path / 'copy.db'}", create=False
                       ).identity() == source.identity()

    started = InMemoryEventLog()  # a target with events of its own keeps its identity
    started.import_events(source.read(0, 3))
    own = started.identity()
    copy_log(source, started)
    assert started.identity() == own
    with pytest.raises(IntegrityError):
        started.adopt_identity(source.identity())
