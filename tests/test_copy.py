"""Copying logs between stores (SQLite <-> GCS <-> in-process): events as they are, verified
by the target's chain as they arrive, resumable, and the same digests on both sides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from google.cloud import storage

from memswarm_es import SQLiteSharedMemory
from memswarm_es.cli import main
from memswarm_es.errors import IntegrityError
from memswarm_es.log import InProcessLog, SQLEventLog
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

    back = SQLEventLog(f"sqlite:///{tmp_path / 'back.db'}")
    assert copy_log(gcs, back) == source.head()
    assert back.read() == source.read() and back.digest() == source.digest()
    assert fold(back.read()).entries == fold(source.read()).entries


def test_a_copy_resumes_where_it_stopped_and_refuses_a_diverged_target(tmp_path: Path) -> None:
    source = history(tmp_path / "source.db")
    target = InProcessLog()
    target.import_events(source.read(0, 5))
    assert copy_log(source, target) == source.head() - 5
    assert copy_log(source, target) == 0
    assert target.digest() == source.digest()

    other = InProcessLog()
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
    forged = [events[0], dataclasses.replace(events[1], actor="mallory")]
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
