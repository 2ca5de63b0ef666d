"""Snapshots and forget: a forget that runs while another instance walks ``as_of`` leaves no
snapshot holding the forgotten content, whichever step of the walk it lands between; a forged
snapshot is found at its position by ``verify_snapshots`` and discarded."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memswarm_es import InMemorySharedMemory, SQLiteSharedMemory
from memswarm_es.log import InMemoryEventLog, SQLEventLog
from memswarm_es.memory import SharedMemory
from memswarm_es.snapshots import (
    InProcessSnapshotStore,
    decode_view,
    encode_view,
    snapshot_store_for,
)
from memswarm_es.timetravel import TimeMachine
from projections.fold import View, entry_from_row, entry_row, fold
from projections.in_memory import InMemoryReadModel

SECRET = "snapshot-secret-5521 lives at 12 Elm St"


def holds_secret(mem: SharedMemory) -> bool:
    store = mem.time_machine.store
    return any(SECRET in repr(store.load(p).entries) for p, _ in store.stored())


def raw(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


@pytest.fixture(params=["sqlite", "memory"])
def pair(request: pytest.FixtureRequest, tmp_path: Path
         ) -> Iterator[tuple[SharedMemory, SharedMemory, Path | None]]:
    """A walker and a forgetter on one log: two instances on one SQLite file, or one
    in-process memory (its threads race the same way)."""
    if request.param == "memory":
        mem = InMemorySharedMemory(snapshot_every=1)
        yield mem, mem, None
        return
    path = tmp_path / "race.db"
    walker = SQLiteSharedMemory(str(path), snapshot_every=1)
    forgetter = SQLiteSharedMemory(str(path))
    yield walker, forgetter, path
    walker.close()
    forgetter.close()


def write_history(mem: SharedMemory) -> str:
    mem.write_scope("before", metadata={"agent_id": "a"})
    m = mem.write_scope(SECRET, metadata={"agent_id": "a", "note": SECRET})
    mem.update(m, SECRET + " (v2)")
    mem.write_scope("after", metadata={"agent_id": "b"})
    return m


def during_save(walker: SharedMemory, act: Callable[[], object],
                monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``act`` once, when the walker is about to save its first snapshot: it has read
    every event (one batch), content included, and not saved anything yet."""
    store = walker.time_machine.store
    real = store.save
    done: list[bool] = []

    def save(view: View, event_hash: bytes, epoch: object) -> bool:
        if not done:
            done.append(True)
            act()
        return real(view, event_hash, epoch)

    monkeypatch.setattr(store, "save", save)


def check_forgotten(walker: SharedMemory, forgetter: SharedMemory, m: str,
                    path: Path | None) -> None:
    head = forgetter.log.head()
    for mem in (walker, forgetter):
        assert not holds_secret(mem)
        for p in range(head + 1):
            assert SECRET not in repr(mem.as_of(p).read_scope())
        assert mem.as_of(3).get(m).value is None
    if path is not None:
        fresh = SQLiteSharedMemory(str(path))
        assert SECRET not in repr(fresh.as_of(3).read_scope())
        fresh.close()
        walker.close()
        forgetter.close()
        assert SECRET.encode() not in raw(path)


def test_a_forget_between_the_walkers_reads_and_its_saves(
        pair: tuple[SharedMemory, SharedMemory, Path | None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    walker, forgetter, path = pair
    m = write_history(forgetter)
    during_save(walker, lambda: forgetter.forget(m, reason="erasure"), monkeypatch)
    walker.as_of(walker.log.head()).view()  # read before the forget: it may answer with the content
    monkeypatch.undo()
    check_forgotten(walker, forgetter, m, path)


def test_a_walk_between_the_forget_event_and_its_redaction(
        pair: tuple[SharedMemory, SharedMemory, Path | None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    walker, forgetter, path = pair
    m = write_history(forgetter)
    real = forgetter.log.redact

    def walk_then_redact(positions: list[int]) -> int:
        past = walker.as_of(4).view().entries[m]
        assert SECRET in repr(past.value)  # the content is still in the log
        assert holds_secret(walker)  # and the walk saved snapshots with it
        return real(positions)

    monkeypatch.setattr(forgetter.log, "redact", walk_then_redact)
    forgetter.forget(m, reason="erasure")
    monkeypatch.undo()
    check_forgotten(walker, forgetter, m, path)


# --- forged snapshots ------------------------------------------------------------------------

def change_value(state: bytes) -> bytes:
    view = decode_view(state)
    first = min(view.entries)
    entry = view.entries[first]
    row = list(entry_row(entry))
    row[1] = "forged value"
    view.entries[first] = entry_from_row(row)
    return encode_view(view)


def drop_entry(state: bytes) -> bytes:
    view = decode_view(state)
    del view.entries[min(view.entries)]
    return encode_view(view)


def add_entry(state: bytes) -> bytes:
    view = decode_view(state)
    row = list(entry_row(next(iter(view.entries.values()))))
    row[0] = "planted"
    view.entries["planted"] = entry_from_row(row)
    return encode_view(view)


FORGERIES: dict[str, Callable[[bytes], bytes]] = {
    "changed value": change_value,
    "dropped entry": drop_entry,
    "added entry": add_entry,
    "garbage": lambda state: b"\x93garbage",
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_snapshot_is_found_at_its_position(forgery: str, tmp_path: Path) -> None:
    path = tmp_path / "forged.db"
    mem = SQLiteSharedMemory(str(path), snapshot_every=5)
    for i in range(17):
        mem.write_scope(f"note {i}", metadata={"agent_id": f"a{i % 3}"})
    truth = fold(mem.log.read(0, 10))
    mem.as_of(17).view()
    assert [p for p, _ in mem.time_machine.store.stored()] == [5, 10, 15]
    assert mem.time_machine.verify_snapshots().ok
    digest = mem.digest()

    with sqlite3.connect(path) as raw_db:
        (state,) = raw_db.execute("SELECT state FROM memswarm_snapshots WHERE position = 10"
                                  ).fetchone()
        raw_db.execute("UPDATE memswarm_snapshots SET state = ? WHERE position = 10",
                       (FORGERIES[forgery](state),))
    raw_db.close()
    if forgery != "garbage":
        assert mem.as_of(10).read_scope() != list(truth.entries.values())  # it is served
    assert mem.log.check().ok and mem.extends(digest)  # the chain cannot see it

    found = mem.time_machine.verify_snapshots()
    assert not found.ok and found.position == 10
    assert [p for p, _ in found.bad] == [10] and found.checked == 2
    assert [p for p, _ in mem.time_machine.store.stored()] == [5, 15]  # discarded
    assert mem.as_of(10).read_scope() == list(truth.entries.values())
    assert mem.time_machine.verify_snapshots().ok
    mem.close()


def test_verify_names_a_forged_snapshot_at_its_position(tmp_path: Path) -> None:
    """SharedMemory.verify() and `memswarm verify` walk the snapshots too."""
    import subprocess
    import sys

    path = tmp_path / "forged.db"
    mem = SQLiteSharedMemory(str(path), snapshot_every=5)
    for i in range(12):
        mem.write_scope(f"note {i}", metadata={"agent_id": "a"})
    mem.as_of(12).view()
    with sqlite3.connect(path) as raw_db:
        (state,) = raw_db.execute("SELECT state FROM memswarm_snapshots WHERE position = 10"
                                  ).fetchone()
        raw_db.execute("UPDATE memswarm_snapshots SET state = ? WHERE position = 10",
                       (FORGERIES["changed value"](state),))
    raw_db.close()
    out = subprocess.run([sys.executable, "-m", "memswarm_es.cli", "verify", "--log",
                          f"sqlite:///{path}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "position 10" in out.stdout, out
    mem.as_of(12).view()  # the discarded snapshot is made again; forge it again
    with sqlite3.connect(path) as raw_db:
        raw_db.execute("UPDATE memswarm_snapshots SET state = ? WHERE position = 10",
                       (FORGERIES["changed value"](state),))
    raw_db.close()
    result = mem.verify()
    assert (result.ok, result.position) == (False, 10) and "snapshot" in (result.reason or "")
    assert mem.verify().ok  # the forgery was discarded; as_of folds from the log again
    mem.close()


def test_a_snapshot_naming_another_events_hash_or_beyond_the_head_is_found() -> None:
    mem = InMemorySharedMemory(snapshot_every=4)
    for i in range(9):
        mem.write_scope(i, metadata={"agent_id": "a"})
    mem.as_of(9).view()
    store = mem.time_machine.store
    events = mem.log.read()
    assert store.save(fold(events[:4], View()), events[2].hash, store.epoch())
    assert store.save(View({}, 20), events[8].hash, store.epoch())
    found = mem.time_machine.verify_snapshots()
    assert [p for p, _ in found.bad] == [4, 20] and found.checked == 1
    assert [p for p, _ in store.stored()] == [8]


def test_memories_sharing_an_in_process_log_share_its_forgets() -> None:
    first = InMemorySharedMemory(snapshot_every=1)
    second = SharedMemory(first.log, InMemoryReadModel(), snapshot_every=1)
    m = write_history(first)
    second.as_of(4).view()  # snapshots with the content
    first.forget(m, reason="erasure")
    assert SECRET not in repr(second.as_of(3).read_scope())
    assert not holds_secret(second)


def test_a_store_that_missed_a_forget_does_not_serve_its_content() -> None:
    """Two time machines on one log, each with a store of its own in this process (as
    processes sharing a GCS log have): the one that missed the forget checks what it loads."""
    mem = InMemorySharedMemory(snapshot_every=1)
    m = write_history(mem)
    other = TimeMachine(mem.log, InProcessSnapshotStore(), every=1)
    assert SECRET in repr(other.at(4).view().entries[m].value)  # the walk saves snapshots
    mem.forget(m, reason="erasure")
    assert other.store.nearest(3) is not None  # it still holds a snapshot with the content...
    assert other.at(3).view().entries[m].value is None  # ...which it no longer serves
    assert other.at(3).get(m).value is None  # (nor does a read of the memory's events)
    assert SECRET not in repr([other.store.load(p).entries for p, _ in other.store.stored()])


def test_each_in_process_log_has_one_store() -> None:
    first, second = InMemoryEventLog(), InMemoryEventLog()
    assert snapshot_store_for(first) is snapshot_store_for(first)
    assert snapshot_store_for(first) is not snapshot_store_for(second)


def test_a_snapshot_table_older_than_its_record_in_the_log_is_emptied(tmp_path: Path) -> None:
    """Snapshots kept before the log recorded their table as derived from it were not dropped
    by the redactions of that time, so they are dropped when the table is recorded."""
    path = tmp_path / "old.db"
    mem = SQLiteSharedMemory(str(path), snapshot_every=1)
    write_history(mem)
    mem.as_of(4).view()
    mem.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM memswarm_meta WHERE key LIKE 'derived:%'")  # as made before
    db.close()
    log = SQLEventLog(f"sqlite:///{path}")
    assert snapshot_store_for(log).stored() == []
    store = snapshot_store_for(log)  # recorded now: kept
    assert store.save(View({}, 1), log.read(0, 1)[0].hash, store.epoch())
    assert [p for p, _ in snapshot_store_for(log).stored()] == [1]
    log.close()
