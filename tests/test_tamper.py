"""Tamper evidence on a real SQLite file: any flipped byte, deleted or swapped event is found by
``verify()`` at its position; a log only appended to since a digest still extends it."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, assume, given, settings

from memswarm_es import SQLiteSharedMemory
from memswarm_es.log import SQLEventLog
from memswarm_es.log.base import Verification

COLUMNS = ["position", "event_id", "type", "agent_id", "group_id", "context_id", "actor",
           "memory_id", "version", "recorded_at", "schema", "payload", "payload_hash", "hash"]


def make_log(path: Path) -> int:
    mem = SQLiteSharedMemory(str(path), synchronous="OFF")
    ids = [mem.write_scope({"note": i, "text": "ünïcode"}, metadata={"agent_id": f"a{i % 3}",
                                                                     "group_id": "g"},
                           context_id="c" if i % 2 else None) for i in range(8)]
    mem.update(ids[1], "changed")
    mem.delete(ids[2])
    head = mem.log.head()
    mem.close()
    return head


def check(path: Path) -> Verification:
    """Walk the chain of the log file at ``path`` (without projecting it)."""
    log = SQLEventLog(f"sqlite:///{path}")
    try:
        return log.check()
    finally:
        log.close()


def flip(value: object, index: int, bit: int) -> tuple[str, object]:
    """The SQL expression and parameter that store ``value`` with one bit of one byte flipped,
    keeping the column's storage class (text stays text, integers stay integers)."""
    if isinstance(value, int):
        raw = value.to_bytes(8, "big", signed=True)
        i = 7 - index % 8
        flipped = raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1:]
        return "?", int.from_bytes(flipped, "big", signed=True)
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    i = index % len(raw)
    flipped = raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1:]
    return ("CAST(? AS TEXT)" if isinstance(value, str) else "?"), flipped


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int]:
    path = tmp_path_factory.mktemp("pristine") / "log.db"
    head = make_log(path)
    return path.read_bytes(), head


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.integers(1, 10), column=st.sampled_from(COLUMNS), index=st.integers(0, 63),
       bit=st.integers(0, 7))
def test_any_flipped_byte_is_found_at_its_position(tmp_path: Path, pristine: tuple[bytes, int],
                                                   row: int, column: str, index: int,
                                                   bit: int) -> None:
    data, _ = pristine
    path = tmp_path / f"flip-{uuid.uuid4().hex}.db"  # never a file (or WAL) of an earlier example
    path.write_bytes(data)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.text_factory = bytes
        (value,) = conn.execute(f"SELECT {column} FROM memswarm_events WHERE position = ?",
                                (row,)).fetchone()
        assume(value is not None)
        if isinstance(value, bytes) and column not in ("payload", "payload_hash", "hash"):
            value = value.decode("utf-8")
        expr, new = flip(value, index, bit)
        try:
            conn.execute(f"UPDATE memswarm_events SET {column} = {expr} WHERE position = ?",
                         (new, row))
        except sqlite3.IntegrityError:
            assume(False)  # a position or id flipped onto another event's: no such state
    result = check(path)
    assert not result.ok
    assert result.position == row, (column, result)


def test_an_event_moved_below_the_first_position_is_found(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    head = make_log(path)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # a reader from 0 never sees it
        conn.execute("UPDATE memswarm_events SET position = -5 WHERE position = ?", (head,))
    result = check(path)
    assert (result.ok, result.position) == (False, head) and "-5" in (result.reason or "")


def test_a_deleted_event_is_found(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    make_log(path)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM memswarm_events WHERE position = 4")
    result = check(path)
    assert (result.ok, result.position) == (False, 4)


def test_two_swapped_events_are_found(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    make_log(path)
    with sqlite3.connect(path) as conn:  # events 3 and 6 trade places in the order
        conn.execute("UPDATE memswarm_events SET position = -1 WHERE position = 3")
        conn.execute("UPDATE memswarm_events SET position = 3 WHERE position = 6")
        conn.execute("UPDATE memswarm_events SET position = 6 WHERE position = -1")
    result = check(path)
    assert (result.ok, result.position) == (False, 3)


def test_digest_holds_while_the_log_only_grows_and_breaks_when_it_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    make_log(path)
    mem = SQLiteSharedMemory(str(path))
    old = mem.digest()
    for i in range(5):
        mem.write_scope(i, metadata={"agent_id": "later"})
    assert mem.extends(old)
    assert mem.verify().ok and mem.verify().checked == old.position + 5
    newest = mem.digest()
    mem.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM memswarm_events WHERE position = ?", (newest.position,))
    again = SQLiteSharedMemory(str(path))
    assert again.verify().ok  # the rest of the chain is intact...
    assert again.extends(old)
    assert not again.extends(newest)  # ...but the auditor's newer digest shows the cut
    again.close()

