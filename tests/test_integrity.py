"""Integrity: no acknowledged write lost, no write (or recorded event) that bricks the store,
bad input refused at the door with a typed error and nothing appended."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memswarm_es import SQLiteSharedMemory
from memswarm_es.errors import (
    IdempotencyError,
    InvalidIdError,
    InvalidInputError,
    InvalidValueError,
    LogNotFoundError,
    MemSwarmError,
    StorageError,
)
from memswarm_es.events import MAX_DEPTH, EventType, NewEvent, now_micros, payload_hash, seal
from memswarm_es.log.sql import SQLEventLog
from memswarm_es.scopes import Scope
from projections.fold import fold
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector

BAD_IDS = ["", "\udc80", "a\udcffb", "line\nbreak", "tab\t", "nul\x00", "del\x7f", "c1\x85",
           "ls\u2028", "ps\u2029", "x" * 513, 7, None.__class__]


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return value


# --- 1. acknowledged writes are never lost ------------------------------------------------------


def test_a_batch_failing_in_a_group_commit_fails_alone_and_loses_no_acknowledged_write(
        tmp_path: Path) -> None:
    """Four threads write good memories while a fifth appends a batch that the store cannot
    take (an id that slipped past every check: a fault no caller can cause any more, so it is
    made by hand). Every write acknowledged is in the log; only the bad caller fails."""
    mem = SQLiteSharedMemory(str(tmp_path / "swarm.db"))
    acknowledged: list[str] = []
    errors: list[BaseException] = []
    bad_errors: list[BaseException] = []
    lock = threading.Lock()

    def good(n: int) -> None:
        for i in range(60):
            try:
                mid = mem.write_scope(f"fact {n}.{i}", metadata={"agent_id": f"a{n}"})
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                continue
            with lock:
                acknowledged.append(mid)

    def bad() -> None:
        for _ in range(60):
            event = NewEvent.create(EventType.MEMORY_WRITTEN, Scope("evil"), "evil",
                                    {"value": "x", "metadata": {}}, memory_id="m", version=1)
            object.__setattr__(event, "actor", "\udc80")  # what SQLite's driver cannot bind
            object.__setattr__(event, "memory_id", f"evil-{threading.get_ident()}-{_}")
            try:
                mem.log.append([event])
            except BaseException as exc:
                bad_errors.append(exc)

    threads = [threading.Thread(target=good, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=bad))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(bad_errors) == 60 and all(isinstance(e, StorageError) for e in bad_errors)
    recorded = {e.memory_id for e in mem.log.read()}
    assert set(acknowledged) <= recorded and len(acknowledged) == 240
    assert mem.verify().ok
    mem.close()
    reopened = SQLiteSharedMemory(str(tmp_path / "swarm.db"))
    assert {e.memory_id for e in reopened.read_scope()} == set(acknowledged)
    reopened.close()


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
@pytest.mark.parametrize("where", ["agent_id", "group_id", "context_id", "event_id", "actor"])
def test_every_id_that_a_store_cannot_carry_is_refused_on_every_log(
        tmp_path: Path, where: str, bad: Any) -> None:
    """Empty, over-long, non-text ids, lone surrogates, NUL, newlines and other control
    characters: InvalidIdError, nothing appended, on the in-process and the SQLite log."""
    for mem in (SQLiteSharedMemory(str(tmp_path / "s.db")), _in_memory()):
        kwargs: dict[str, Any] = {"metadata": {"agent_id": "a"}}
        if where in ("agent_id", "group_id"):
            kwargs["metadata"] = {where: bad}
        elif where == "context_id":
            kwargs["context_id"] = bad
        else:
            kwargs[where] = bad
        with pytest.raises(InvalidIdError):
            mem.write_scope("v", **kwargs)
        assert mem.log.head() == 0
        mem.close()


def _in_memory() -> Any:
    from memswarm_es import InMemorySharedMemory

    return InMemorySharedMemory()


# --- 2. nothing recorded can brick the store ------------------------------------------------------

_LEAVES = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
           | st.text() | st.binary(max_size=8) | st.sampled_from(["\udc80", "ok\ud800"])
           | st.builds(object) | st.builds(set) | st.datetimes())
_KEYS = st.text(max_size=4) | st.integers(-3, 3) | st.tuples(st.integers(0, 2)) | st.none()
STRANGE = st.recursive(
    _LEAVES,
    lambda inner: (st.lists(inner, max_size=3) | st.tuples(inner, inner)
                   | st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=12,
) | st.integers(1, 140).map(nested)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=STRANGE, metadata=st.dictionaries(_KEYS, STRANGE, max_size=2))
def test_any_value_is_either_refused_with_a_typed_error_or_stored_foldable(
        tmp_path_factory: pytest.TempPathFactory, value: Any, metadata: dict[Any, Any]) -> None:
    """Whatever a caller passes, the store stays whole: a refused write raises a typed error
    and appends nothing; an accepted one reads back, replays, travels in time, survives a
    reopen and verifies."""
    path = str(tmp_path_factory.mktemp("brick") / "s.db")
    mem = SQLiteSharedMemory(path, snapshot_every=1)
    good = mem.write_scope("before", metadata={"agent_id": "a"})
    try:
        mid = mem.write_scope(value, metadata={"agent_id": "a", **metadata})
    except MemSwarmError as exc:
        assert isinstance(exc, InvalidInputError)
        assert mem.log.head() == 1
        mid = None
    else:
        mem.update(mid, value)
    assert mem.get(good).value == "before"
    assert len(mem.read_scope(agent_id="a")) == (1 if mid is None else 2)
    mem.write_scope("after", metadata={"agent_id": "a"})
    mem.replay()
    assert mem.as_of(mem.log.head()).read_scope(agent_id="a") == mem.read_scope(agent_id="a")
    assert mem.as_of(2).read_scope(agent_id="a")
    if mid is not None:
        assert mem.history(mid)[-1].damaged is None
    assert mem.verify().ok
    mem.close()
    again = SQLiteSharedMemory(path)
    assert len(again.read_scope(agent_id="a")) == (2 if mid is None else 3)
    again.close()


def test_the_nesting_limit_is_exact(tmp_path: Path) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "s.db"))
    deepest = nested(MAX_DEPTH)
    mid = mem.write_scope(deepest, metadata={"agent_id": "a"})
    assert mem.get(mid).value == deepest
    with pytest.raises(InvalidValueError, match="nested deeper"):
        mem.write_scope(nested(MAX_DEPTH + 1), metadata={"agent_id": "a"})
    with pytest.raises(InvalidValueError, match="nested deeper"):
        mem.write_scope("v", metadata={"agent_id": "a", "deep": nested(MAX_DEPTH + 1)})
    with pytest.raises(InvalidValueError, match="key"):
        mem.write_scope({(1, 2): "x"}, metadata={"agent_id": "a"})
    assert mem.log.head() == 1
    mem.close()


def _raw_payloads() -> list[tuple[str, bytes]]:
    """Payloads another program (or an older version) could have recorded."""
    deep = b"\x91" * 3000 + b"\xc0"  # an array nested 3000 deep
    return [
        ("not msgpack", b"\xc1\xff\x00garbage"),
        ("a list, not a map", msgpack.packb(["value", 1])),
        ("tuple keys", msgpack.packb({"value": {(1, 2): "x"}})),
        ("int keys", msgpack.packb({"value": {1: "x"}})),
        ("deep", msgpack.packb({"value": None})[:-1] + deep),
        ("metadata not a map", msgpack.packb({"value": "v", "metadata": [1]})),
        ("bad text", b"\x81\xa5value\xa2\xff\xfe"),
        ("empty", b""),
        ("truncated", msgpack.packb({"value": "x" * 50})[:10]),
    ]


def _record_raw(path: str, events: list[NewEvent]) -> None:
    """Append events as another program would: chained correctly, payload as given."""
    log = SQLEventLog(f"sqlite:///{path}")
    head = log.digest()
    sealed = []
    prev_hash, position = head.hash, head.position
    for new in events:
        position += 1
        event = seal(new, position, now_micros(), prev_hash)
        # Another program stores the payload as it is, without MemSwarm's salt.
        event = event._replace(payload=new.payload,
                                    payload_hash=payload_hash(new.payload))
        event = event._replace(hash=event.expected_hash(prev_hash))
        prev_hash = event.hash
        sealed.append(event)
    log.import_events(sealed)
    log.close()


@pytest.mark.parametrize(("why", "payload"), _raw_payloads(), ids=[w for w, _ in _raw_payloads()])
def test_an_unreadable_event_in_the_log_stops_nothing(tmp_path: Path, why: str,
                                                      payload: bytes) -> None:
    """The memory reads as damaged (value None, flagged), everything else reads, replays,
    travels in time and reopens, and verify names the event's position."""
    path = str(tmp_path / "s.db")
    mem = SQLiteSharedMemory(path, snapshot_every=2)
    before = mem.write_scope("before", metadata={"agent_id": "a"})
    mem.close()
    _record_raw(path, [
        NewEvent(type=EventType.MEMORY_WRITTEN, scope=Scope("a"), actor="other",
                 payload=payload, memory_id="strange", version=1, event_id="strange"),
        NewEvent(type=EventType.MEMORY_UPDATED, scope=Scope("a"), actor="other",
                 payload=payload, memory_id=before, version=2),
    ])
    mem = SQLiteSharedMemory(path, snapshot_every=2)
    damaged = mem.get("strange")
    assert damaged.value is None and damaged.damaged
    assert mem.get(before).damaged and mem.get(before).value is None
    after = mem.write_scope("after", metadata={"agent_id": "a"})
    mem.update(before, "mended")
    assert mem.get(before).value == "mended" and mem.get(before).damaged is None
    assert {e.memory_id for e in mem.read_scope(agent_id="a")} == {before, "strange", after}
    mem.replay()
    assert mem.read_scope(agent_id="a") == sorted(
        fold(mem.log.read()).entries.values(), key=lambda e: e.position)
    assert mem.as_of(3).get("strange").damaged
    assert mem.history("strange")[0].damaged
    result = mem.verify()
    assert (result.ok, result.position) == (False, 2)
    assert mem.audit(agent_id="a").events
    mem.close()
    out = _cli("audit", "--log", f"sqlite:///{path}")
    assert out.returncode == 0 and "damaged" in out.stdout
    out = _cli("history", "strange", "--log", f"sqlite:///{path}")
    assert out.returncode == 0 and "damaged" in out.stdout
    out = _cli("verify", "--log", f"sqlite:///{path}")
    assert out.returncode == 1 and "position 2" in out.stdout


def test_rows_damaged_to_another_storage_type_are_named_by_verify(tmp_path: Path) -> None:
    """A column whose storage type was changed by hand reads, and verify names its position
    instead of raising."""
    import sqlite3

    for column, value in [("version", "'abc'"), ("agent_id", "5"), ("payload", "'text'"),
                          ("payload_hash", "42"), ("hash", "'x'"), ("recorded_at", "'soon'"),
                          ("schema", "'v1'"), ("memory_id", "X'ff'"), ("type", "3.5")]:
        path = str(tmp_path / f"{column}.db")
        mem = SQLiteSharedMemory(path)
        for i in range(3):
            mem.write_scope(f"v{i}", metadata={"agent_id": "a"})
        mem.close()
        with sqlite3.connect(path) as raw:
            raw.execute(f"UPDATE memswarm_events SET {column} = {value} WHERE position = 2")
        mem = SQLiteSharedMemory(path)
        result = mem.verify()
        assert not result.ok and result.position == 2, (column, result)
        mem.read_scope(agent_id="a")
        mem.close()


# --- salted payload hashes: a forgotten payload cannot be confirmed by guessing ------------------


def test_a_forgotten_payload_cannot_be_confirmed_by_guessing(tmp_path: Path) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "s.db"))
    secret = "the launch code is 0000"
    mid = mem.write_scope(secret, metadata={"agent_id": "a"}, event_id="req-1")
    event = mem.log.read()[0]
    assert event.payload_hash != payload_hash(NewEvent.create(
        EventType.MEMORY_WRITTEN, Scope("a"), "a", {"value": secret, "metadata": {}}).payload)
    mem.forget(mid, "asked")
    answers = []
    for guess in (secret, "wrong guess"):
        try:
            answers.append(mem.write_scope(guess, metadata={"agent_id": "a"},
                                           event_id="req-1"))
        except IdempotencyError as exc:
            answers.append(type(exc).__name__)
    assert answers[0] == answers[1]
    assert mem.log.head() == 2
    mem.close()


def test_a_retry_with_other_content_is_still_refused(tmp_path: Path) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "s.db"))
    mid = mem.write_scope("v", metadata={"agent_id": "a"}, event_id="req-1")
    assert mem.write_scope("v", metadata={"agent_id": "a"}, event_id="req-1") == mid
    with pytest.raises(IdempotencyError):
        mem.write_scope("other", metadata={"agent_id": "a"}, event_id="req-1")
    mem.update(mid, "w", event_id="req-2")
    assert mem.update(mid, "w", event_id="req-2") == 2
    with pytest.raises(IdempotencyError):
        mem.update(mid, "x", event_id="req-2")
    mem.close()


# --- typed errors, never silent coercions ------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda m, mid: m.as_of("12"),
    lambda m, mid: m.as_of(True),
    lambda m, mid: m.as_of(-1),
    lambda m, mid: m.as_of(time="2026-11-25T10:00"),
    lambda m, mid: m.as_of(time=datetime(2026, 11, 25)),
    lambda m, mid: m.write_scope("v", metadata={"agent_id": "a"}, actor=""),
    lambda m, mid: m.update(mid, "v", actor=""),
    lambda m, mid: m.write_scope("v", metadata={"agent_id": "a"}, embedding="123"),
    lambda m, mid: m.write_scope("v", metadata={"agent_id": "a"}, embedding=[True, 1.0]),
    lambda m, mid: m.write_scope("v", metadata={"agent_id": "a"}, embedding=[float("nan")]),
    lambda m, mid: m.write_scope("v", metadata={"agent_id": "a"}, embedding={"a": 1.0}),
    lambda m, mid: m.update(mid, "v", expected_version=True),
    lambda m, mid: m.forget(mid, "x" * 10_000_000),
    lambda m, mid: m.forget(mid, "   "),
    lambda m, mid: m.forget(mid, "ok", actor=""),
], ids=["as_of-str", "as_of-bool", "as_of-negative", "time-str", "time-naive", "actor-empty",
        "update-actor-empty", "embedding-str", "embedding-bool", "embedding-nan",
        "embedding-map", "expected-version-bool", "reason-10MiB", "reason-blank",
        "forget-actor-empty"])
def test_bad_arguments_get_typed_errors_and_write_nothing(
        tmp_path: Path, call: Callable[[Any, str], Any]) -> None:
    mem = SQLiteSharedMemory(str(tmp_path / "s.db"))
    mid = mem.write_scope("v", metadata={"agent_id": "a"})
    with pytest.raises(InvalidInputError):
        call(mem, mid)
    assert mem.log.head() == 1
    mem.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memswarm_es.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_read_commands_never_create_a_log_and_report_bad_arguments(tmp_path: Path) -> None:
    typo = tmp_path / "swarm.bd"
    for command in (["verify"], ["audit"], ["history", "m"], ["as-of", "--position", "1"],
                    ["forget", "m", "--reason", "r"]):
        out = _cli(*command, "--log", f"sqlite:///{typo}")
        assert out.returncode == 2, out
        assert "Traceback" not in out.stderr and "no such file" in out.stderr
        assert not typo.exists()
    real = tmp_path / "swarm.db"
    SQLiteSharedMemory(str(real)).close()
    for command in (["verify", "--digest", "garbage"], ["verify", "--digest", "1:abcd"],
                    ["as-of", "--time", "yesterday"], ["audit", "--since", "noon"]):
        out = _cli(*command, "--log", f"sqlite:///{real}")
        assert out.returncode == 2, out
        assert "Traceback" not in out.stderr and "error:" in out.stderr


def test_ids_cannot_forge_lines_in_audit_output(tmp_path: Path) -> None:
    """No id can hold a newline; a value that does is shown escaped, one event per line."""
    path = tmp_path / "s.db"
    mem = SQLiteSharedMemory(str(path))
    mem.write_scope("fine\n9999  2026-01-01  memory.deleted  admin", metadata={"agent_id": "a"})
    mem.close()
    out = _cli("audit", "--log", f"sqlite:///{path}")
    assert out.returncode == 0
    assert len(out.stdout.strip().splitlines()) == 3  # headers, rule, one event


def test_opening_for_reading_never_creates(tmp_path: Path) -> None:
    with pytest.raises(LogNotFoundError):
        SQLEventLog(f"sqlite:///{tmp_path / 'nothing.db'}", create=False)
    assert not (tmp_path / "nothing.db").exists()
    (tmp_path / "empty.db").touch()
    with pytest.raises(LogNotFoundError):
        SQLEventLog(f"sqlite:///{tmp_path / 'empty.db'}", create=False)
    made = SQLEventLog(f"sqlite:///{tmp_path / 'made.db'}")
    again = SQLEventLog(f"sqlite:///{tmp_path / 'made.db'}", create=False)
    assert made.identity() == again.identity() and made.identity()
    made.close()
    again.close()


def test_a_projector_refuses_the_view_of_another_log(tmp_path: Path) -> None:
    from memswarm_es.errors import LogMismatchError

    first = SQLEventLog(f"sqlite:///{tmp_path / 'a.db'}")
    other = SQLEventLog(f"sqlite:///{tmp_path / 'b.db'}")
    first.append([NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a"), "a",
                                  {"value": 1, "metadata": {}}, memory_id="m", version=1)])
    view = InMemoryReadModel()
    Projector(first, view).catch_up()
    with pytest.raises(LogMismatchError):
        Projector(other, view).catch_up()
    assert view.checkpoint() == 1 and view.get("m") is not None
    first.close()
    other.close()


def test_postgresql_records_the_servers_time_not_the_clients(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client whose clock runs a day fast cannot pin recorded_at into the future."""
    import uuid

    from memswarm_es.log import sql

    log = SQLEventLog(postgres_url, table_prefix=f"t{uuid.uuid4().hex[:8]}_")
    day = 86_400_000_000
    monkeypatch.setattr(sql, "now_micros", lambda: now_micros() + day)  # a clock fault
    (event,) = log.append([NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a"), "a",
                                           {"value": 1, "metadata": {}}, memory_id="m",
                                           version=1)])
    assert abs(event.recorded_at - datetime.now(timezone.utc)).total_seconds() < 60
    log.close()


@pytest.mark.parametrize("kind", ["redis", "chroma"])
def test_unreadable_events_project_into_every_read_model(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Every read model takes a log holding every kind of unreadable payload and equals the
    fold: the damaged memories are there, flagged, and projection went on past them."""
    path = str(tmp_path / "s.db")
    mem = SQLiteSharedMemory(path)
    good = mem.write_scope("good", metadata={"agent_id": "a"})
    mem.close()
    _record_raw(path, [
        NewEvent(type=EventType.MEMORY_WRITTEN, scope=Scope("a"), actor="other",
                 payload=payload, memory_id=f"strange-{i}", version=1)
        for i, (_, payload) in enumerate(_raw_payloads())])
    log = SQLEventLog(f"sqlite:///{path}", create=False)
    if kind == "redis":
        from projections.redis import RedisReadModel

        model: Any = RedisReadModel(request.getfixturevalue("redis_url"),
                                    prefix=request.getfixturevalue("redis_prefix"))
    else:
        from tests.test_chroma_integrity import model_on

        model = model_on(tmp_path / "chroma")
    Projector(log, model, batch_size=3).catch_up()
    view = model.read_scope(Scope("a"))
    assert view == sorted(fold(log.read()).entries.values(), key=lambda e: e.position)
    assert [e.memory_id for e in view if e.damaged is None] == [good]
    assert len(view) == 1 + len(_raw_payloads())
    model.close()
    log.close()


def test_a_log_written_when_ids_could_hold_control_characters_still_reads(tmp_path: Path) -> None:
    """Ids the previous release accepted (tabs, newlines) are refused at the door now, but a
    log that holds them reads, replays, travels in time and takes new writes."""
    path = str(tmp_path / "old.db")
    log = SQLEventLog(f"sqlite:///{path}")
    new = NewEvent.create(EventType.MEMORY_WRITTEN, Scope("placeholder"), "old",
                          {"value": "from before", "metadata": {}}, memory_id="old-1", version=1)
    sealed = seal(new, 1, now_micros(), log.digest().hash)
    sealed = sealed._replace(scope=Scope.stored("team\tred", "g\nx", None))
    log.import_events([sealed._replace(hash=sealed.expected_hash(log.digest().hash))])
    log.close()
    mem = SQLiteSharedMemory(path)
    assert [e.value for e in mem.read_scope()] == ["from before"]
    assert mem.read_scope(agent_id="alice") == []
    mem.write_scope("new", metadata={"agent_id": "alice"})
    with pytest.raises(InvalidIdError):  # such an id cannot be asked for any more...
        mem.read_scope(agent_id="team\tred")
    assert mem.read_scope()[0].value == "from before"  # ...but its memory reads
    assert len(mem.as_of(2).read_scope()) == 2
    mem.replay()
    assert len(mem.read_scope()) == 2 and mem.verify().ok
    mem.close()


@pytest.mark.parametrize("same_file", [True, False], ids=["same-log", "private-cache"])
def test_composing_a_hybrid_never_clears_a_shared_view(
        same_file: bool, redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    """A HybridMemory over a shared Redis view (the same log opened twice, or a private cache
    that wrote to its own log) leaves the shared view as it is."""
    from memswarm_es import HybridMemory, RedisSharedMemory

    path = str(tmp_path / "h.db")
    writer = RedisSharedMemory(redis_url, prefix=redis_prefix, log=f"sqlite:///{path}")
    mids = [writer.write_scope(i, metadata={"agent_id": "a"}) for i in range(5)]
    checkpoint = writer.read_model.checkpoint()
    if same_file:
        cache = RedisSharedMemory(redis_url, prefix=redis_prefix, log=f"sqlite:///{path}")
    else:
        cache = RedisSharedMemory(redis_url, prefix=redis_prefix)
        cache.write_scope("scratch", metadata={"agent_id": "a"})
    hybrid = HybridMemory(cache, SQLiteSharedMemory(path))
    assert writer.read_model.checkpoint() == checkpoint  # never cleared, not even for a moment
    assert [e.memory_id for e in hybrid.read_scope(agent_id="a")] == mids
    hybrid.close()
    writer.close()
