"""Forget: the content of every version leaves the log file, the snapshots, every read model and
every time-travel view; history keeps that the versions existed; the chain still verifies."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from memswarm_es import HybridMemory, MemoryNotFoundError, SQLiteSharedMemory
from memswarm_es.errors import InvalidValueError
from memswarm_es.events import EventType
from memswarm_es.memory import RedisSharedMemory

SECRET = "patient-7741 allergic to penicillin"


def raw_bytes(path: Path) -> bytes:
    """Everything SQLite keeps for the database: the file and its WAL, if any."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_forget_removes_the_content_everywhere_and_the_chain_still_verifies(
        tmp_path: Path) -> None:
    path = tmp_path / "swarm.db"
    mem = SQLiteSharedMemory(str(path), snapshot_every=2)
    keep = mem.write_scope("unrelated", metadata={"agent_id": "nurse", "group_id": "ward"})
    m = mem.write_scope(SECRET, metadata={"agent_id": "nurse", "group_id": "ward",
                                          "note": SECRET + " (metadata)"})
    mem.update(m, SECRET + " v2")
    mem.write_scope("later", metadata={"agent_id": "doctor"})
    assert mem.as_of(3).get(m).value == SECRET + " v2"  # builds snapshots that hold it
    assert SECRET.encode() in raw_bytes(path)

    position = mem.forget(m, reason="GDPR erasure request #12", actor="dpo")

    assert mem.verify().ok
    with pytest.raises(MemoryNotFoundError):
        mem.get(m)
    assert [e.memory_id for e in mem.read_scope(group_id="ward")] == [keep]
    for p in range(position + 1):
        past = mem.as_of(p)
        assert all(SECRET not in repr(e) for e in past.read_scope())
    assert mem.as_of(3).get(m).value is None  # it existed then; its content is gone

    history = mem.history(m)
    assert [(v.version, v.type, v.redacted) for v in history] == [
        (1, EventType.MEMORY_WRITTEN, True), (2, EventType.MEMORY_UPDATED, True),
        (3, EventType.MEMORY_FORGOTTEN, False)]
    assert (history[-1].actor, history[-1].reason) == ("dpo", "GDPR erasure request #12")
    assert all(v.value is None for v in history)

    mem.replay()
    assert mem.read_scope(agent_id="nurse") == [mem.get(keep)]
    mem.close()
    assert SECRET.encode() not in raw_bytes(path)
    reopened = SQLiteSharedMemory(str(path))
    assert reopened.verify().ok
    assert all(e.payload is None for e in reopened.log.read() if e.memory_id == m
               and e.type != EventType.MEMORY_FORGOTTEN)
    reopened.close()


def test_forget_reaches_a_redis_read_model(tmp_path: Path, redis_url: str,
                                           redis_prefix: str) -> None:
    mem = HybridMemory(RedisSharedMemory(redis_url, prefix=redis_prefix),
                       SQLiteSharedMemory(str(tmp_path / "h.db")))
    m = mem.write_scope(SECRET, metadata={"agent_id": "nurse"})
    mem.update(m, SECRET + " v2")
    client = redis.Redis.from_url(redis_url)

    def redis_holds_secret() -> bool:
        for key in client.scan_iter(match=f"{redis_prefix}*"):
            kind = client.type(key)
            if kind == b"hash" and any(SECRET.encode() in v for v in client.hvals(key)):
                return True
            if kind == b"string" and SECRET.encode() in (client.get(key) or b""):
                return True
        return False

    assert redis_holds_secret()
    mem.forget(m, reason="erasure")
    assert not redis_holds_secret()
    assert mem.read_scope(agent_id="nurse") == []
    mem.close()


def test_forgetting_a_deleted_memory_and_forgetting_twice(tmp_path: Path) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "f.db"))
    m = mem.write_scope(SECRET, metadata={"agent_id": "a"})
    mem.delete(m)
    first = mem.forget(m, reason="erasure")
    assert mem.forget(m, reason="erasure") == first  # finishes, appends nothing
    assert mem.log.head() == first
    assert mem.history(m)[0].redacted
    with pytest.raises(MemoryNotFoundError):
        mem.update(m, "resurrect")
    with pytest.raises(MemoryNotFoundError):
        mem.forget("no-such-memory", reason="x")
    with pytest.raises(InvalidValueError):
        mem.forget(m, reason="  ")
    mem.close()


def test_a_forget_interrupted_before_redaction_is_finished_by_the_next_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "crash.db"
    mem = SQLiteSharedMemory(str(path))
    m = mem.write_scope(SECRET, metadata={"agent_id": "a"})

    def crash(positions: object) -> int:
        raise OSError("power cut")  # a fault we cannot cause for real between two statements

    monkeypatch.setattr(mem.log, "redact", crash)
    with pytest.raises(OSError):
        mem.forget(m, reason="erasure")
    monkeypatch.undo()
    mem.close()

    again = SQLiteSharedMemory(str(path))
    with pytest.raises(MemoryNotFoundError):  # the forget event is recorded: the memory is gone
        again.get(m)
    assert SECRET.encode() not in raw_bytes(path)  # ...and the open finished its redaction
    again.forget(m, reason="erasure")
    assert [v.type for v in again.history(m)] == [EventType.MEMORY_WRITTEN,
                                                  EventType.MEMORY_FORGOTTEN]
    again.close()
    assert SECRET.encode() not in raw_bytes(path)
