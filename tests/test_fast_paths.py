"""The fast paths of reading and folding give what the general paths give, on every input they
must handle: rows of other storage types, damaged text, strange payloads, unknown events."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memswarm_es.events import (
    CONTENT_FIELDS,
    MAX_DEPTH,
    SALT_MARK,
    Event,
    EventType,
    NewEvent,
    event_from_row,
    event_row,
    events_from_rows,
    payload_problem,
    seal,
    upcast,
)
from memswarm_es.log.sql import SQLEventLog
from memswarm_es.scopes import Scope, stored_scope
from projections.fold import Change, changes, evolve
from projections.in_memory import InMemoryReadModel
from tests.histories import count_log_reads


def recorded(payload: bytes, kind: str = EventType.MEMORY_WRITTEN, position: int = 1,
             memory_id: str | None = "m1") -> Event:
    new = NewEvent(kind, Scope("a", "g", "c"), "a", b"", memory_id=memory_id,
                   version=None if memory_id is None else 1)
    return seal(new, position, 1_000_000, bytes(32))._replace(payload=SALT_MARK + bytes(16)
                                                             + payload)


def general_content(event: Event) -> tuple[Any, str | None]:
    """``Event.content`` as it was written before its fast path: through ``data``."""
    try:
        data = event.data
    except Exception as exc:
        return None, f"payload cannot be decoded ({type(exc).__name__}: {exc})"
    if data is None:
        return None, None
    if not isinstance(data, dict):
        return None, f"payload is a {type(data).__name__}, not a map"
    problem = payload_problem(data, CONTENT_FIELDS)
    return (None, problem) if problem else (data, None)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return value


STRANGE_PAYLOADS = [
    {"value": "plain", "metadata": {"n": 1, "x": 0.5, "t": ["a", "b"], "b": True, "z": None}},
    {"value": float("nan"), "metadata": {}},
    {"value": "v", "metadata": {"x": float("inf")}},
    {"value": ["a", -math.inf]},
    {"value": {"k": [1, {"deep": float("nan")}]}},
    {"value": "v", "metadata": "not a map"},
    {"value": "v", "metadata": None},
    {"value": "v", "metadata": []},
    {1: "an int key", "value": "v"},
    {"value": {1: "an int key inside"}},
    {"value": {b"bytes key": 1}},
    {"value": "v", "metadata": {b"bytes key": 1}},
    {"value": nested(MAX_DEPTH)},
    {"value": nested(MAX_DEPTH + 1)},
    {"value": "v", "metadata": {"deep": nested(MAX_DEPTH - 1)}},
    {"value": "v", "metadata": {"deep": nested(MAX_DEPTH)}},
    {"value": 2**64 - 1, "metadata": {"low": -(2**63)}},
    {"value": msgpack.ExtType(5, b"x")},
    {"value": "v", "metadata": {"t": msgpack.Timestamp(1, 0)}},
    {"other": float("nan"), "value": "fields outside the content are not walked"},
    {"value": b"\x00bytes", "metadata": {"b": b""}},
    {},
    [1, 2],
    "a string payload",
    None,
    7,
]


@pytest.mark.parametrize("payload", STRANGE_PAYLOADS, ids=repr)
def test_content_fast_path_is_the_general_path(payload: Any) -> None:
    event = recorded(msgpack.packb(payload, use_bin_type=True))
    assert repr(event.content()) == repr(general_content(event))


@pytest.mark.parametrize("raw", [b"", b"\xc1\xff", b"\x81\xa5value\xa2\xff\xfe", b"\x92\x01",
                                 b"\xdc\xff\xff"], ids=repr)
def test_content_fast_path_on_undecodable_payloads(raw: bytes) -> None:
    event = recorded(raw)
    assert event.content() == general_content(event)
    unsalted = event._replace(payload=raw)
    assert unsalted.content() == general_content(unsalted)
    assert event._replace(payload=None).content() == (None, None)


def test_content_fast_path_upcasts_old_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    import memswarm_es.events as ev

    monkeypatch.setattr(ev, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(ev, "UPCASTERS", {(EventType.MEMORY_WRITTEN, 1):
                                          lambda d: {**d, "value": d["value"].upper()}})
    event = recorded(msgpack.packb({"value": "old"}))
    assert event.content() == general_content(event) == ({"value": "OLD"}, None)
    unknown = recorded(msgpack.packb({"value": "old"}), kind="another.type")
    assert unknown.content() == general_content(unknown)
    assert "KeyError" in (unknown.content()[1] or "")
    assert upcast(EventType.MEMORY_WRITTEN, 2, {"a": 1}) == {"a": 1}


content_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text()
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["value", "metadata", "key", "other"]), content_values))
def test_content_fast_path_on_any_content(payload: dict[str, Any]) -> None:
    try:
        packed = msgpack.packb(payload, use_bin_type=True)
    except (OverflowError, ValueError):
        return
    event = recorded(packed)
    assert repr(event.content()) == repr(general_content(event))


# --- rows ----------------------------------------------------------------------------------------

ROW = event_row(recorded(msgpack.packb({"value": "v"})))

DAMAGED_ROWS = [
    ROW,
    (*ROW[:3], None, None, None, *ROW[6:7], None, None, *ROW[9:11], None, *ROW[12:]),
    ("7", *ROW[1:]),
    (7.0, *ROW[1:]),
    (True, *ROW[1:]),
    (ROW[0], b"an id as a blob", *ROW[2:]),
    (*ROW[:2], 3.5, *ROW[3:]),
    (*ROW[:3], 5, *ROW[4:]),
    (*ROW[:4], memoryview(b"g"), *ROW[5:]),
    (*ROW[:6], None, *ROW[7:]),
    (*ROW[:7], bytearray(b"\xff"), *ROW[8:]),
    (*ROW[:8], "abc", *ROW[9:]),
    (*ROW[:9], "soon", *ROW[10:]),
    (*ROW[:10], "v1", *ROW[11:]),
    (*ROW[:11], "text", *ROW[12:]),
    (*ROW[:11], memoryview(b"payload"), *ROW[12:]),
    (*ROW[:12], 42, ROW[13]),
    (*ROW[:13], "x"),
    (*ROW[:13], None),
]


@pytest.mark.parametrize("row", DAMAGED_ROWS, ids=[str(i) for i in range(len(DAMAGED_ROWS))])
def test_rows_fast_path_is_the_general_path(row: tuple[Any, ...]) -> None:
    fast = events_from_rows([row])
    assert fast == [event_from_row(row)]
    assert [tuple(map(type, e)) for e in fast] == [tuple(map(type, event_from_row(row)))]
    assert type(fast[0].scope) is Scope


def test_rows_of_another_shape_are_refused_alike() -> None:
    for row in (ROW[:13], (*ROW, 1)):
        with pytest.raises(ValueError):
            event_from_row(row)
        with pytest.raises(ValueError):
            events_from_rows([row])


def test_a_stored_scope_is_a_scope() -> None:
    scope = stored_scope("a", None, "\x00 unchecked")
    assert scope == Scope.stored("a", None, "\x00 unchecked")
    assert hash(scope) == hash(Scope.stored("a", None, "\x00 unchecked"))
    assert stored_scope("a", "g", "c") == Scope("a", "g", "c")
    assert scope.parts() == (("agent_id", "a"), ("context_id", "\x00 unchecked"))
    assert scope != ("a", None, "\x00 unchecked") and scope != "a"
    with pytest.raises(AttributeError):
        scope.agent_id = "b"  # type: ignore[misc]


def test_damaged_text_reads_through_the_sqlite_fast_path(tmp_path: Path) -> None:
    """Text that is not UTF-8 (written by hand) is read leniently, by a second pass: the same
    events as a log read without the fast path."""
    path = tmp_path / "log.db"
    log = SQLEventLog(f"sqlite:///{path}")
    log.append([NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a"), "a", {"value": i},
                                memory_id=f"m{i}", version=1) for i in range(3)])
    clean = log.read()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE memswarm_events SET actor = CAST(X'61ff62' AS TEXT) "
                    "WHERE position = 2")
    damaged = log.read()
    assert damaged[1].actor == "a\ufffdb"
    assert [e._replace(actor="a") for e in damaged] == clean
    assert log.read(1, 1)[0].actor == "a\ufffdb"
    assert next(iter(log.iter_events(0, 2)))[1].actor == "a\ufffdb"
    model = InMemoryReadModel()
    model.apply(damaged)
    assert model.get("m1") is not None and model.get("m1").created_by == "a\ufffdb"
    log.close()


# --- the fold ------------------------------------------------------------------------------------


def test_changes_is_evolve_per_memory() -> None:
    w = [recorded(msgpack.packb({"value": i}), position=i + 1, memory_id=f"m{i % 3}")
         for i in range(6)]
    updated = recorded(msgpack.packb({"value": "new"}), EventType.MEMORY_UPDATED, 7, "m0")
    deleted = recorded(b"", EventType.MEMORY_DELETED, 8, "m1")
    other = recorded(msgpack.packb({}), "another.type", 9, "m2")
    no_memory = recorded(msgpack.packb({"admin": True}), EventType.GROUP_JOINED, 10, None)
    events = [*w, updated, deleted, other, no_memory]
    prior = {"m2": evolve(None, w[2])}
    found = changes(prior, events)
    expected = {}
    for m in ("m0", "m1", "m2"):
        state = prior.get(m)
        for e in events:
            if e.memory_id == m:
                state = evolve(state, e)
        expected[m] = state
    assert found == [Change(m, prior.get(m), a) for m, a in expected.items()
                     if prior.get(m) != a]
    assert all(type(c) is Change for c in found)
    assert changes({"m0": expected["m0"]}, []) == []


def test_a_written_entry_is_packed_as_its_row() -> None:
    """The Redis commit packs a new memory's entry as it is (a tuple): the bytes of its row."""
    from projections.fold import entry_row

    pack = msgpack.Packer(use_bin_type=True, datetime=False).pack
    for payload in ({"value": "v", "metadata": {"n": 1}, "key": "k", "namespace": ["a", "b"]},
                    {"value": None, "readable_by": ["*"]}, {}):
        entry = evolve(None, recorded(msgpack.packb(payload)))
        assert entry is not None and pack(entry) == pack(entry_row(entry))


def test_the_collector_runs_again_after_a_catch_up(tmp_path: Path) -> None:
    """A projector pauses the cyclic garbage collector while it folds, and gives it back as it
    found it: on, off, or after a batch that failed."""
    import gc

    from memswarm_es.log import InMemoryEventLog
    from projections.projector import Projector

    log = InMemoryEventLog()
    log.append([NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a"), "a", {"value": i},
                                memory_id=f"m{i}", version=1) for i in range(5)])
    seen: list[bool] = []

    class Watching(InMemoryReadModel):
        def commit(self, *args: Any, **kwargs: Any) -> None:
            seen.append(gc.isenabled())
            super().commit(*args, **kwargs)

    assert gc.isenabled()
    Projector(log, Watching(), 2).catch_up()
    assert seen == [False] * 3 and gc.isenabled()

    class Failing(InMemoryReadModel):
        def commit(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        Projector(log, Failing(), 2).catch_up()
    assert gc.isenabled()
    gc.disable()
    try:
        Projector(log, InMemoryReadModel(), 2).catch_up()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_in_process_model_takes_its_own_writes_as_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a write, an in-memory model right before it applies the recorded events without
    reading them back; a read with nothing committed since reads no event; a model that is
    not right before them (another process wrote in between) reads the log, to the same
    view."""
    from memswarm_es import SharedMemory
    from projections.fold import fold

    log = SQLEventLog(f"sqlite:///{tmp_path / 'log.db'}")
    memory = SharedMemory(log, InMemoryReadModel())
    other = SQLEventLog(f"sqlite:///{tmp_path / 'log.db'}")
    reads = count_log_reads(monkeypatch)
    first = memory.write_scope("one", {"agent_id": "a"})
    memory.update(first, "one, again")
    assert reads == []
    assert [e.value for e in memory.read_scope(agent_id="a")] == ["one, again"]
    assert len(reads) == 1  # the log's stamp moved (the writes): one look past the checkpoint
    memory.read_scope(agent_id="a")
    assert len(reads) == 1  # nothing committed since
    other.append([NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a"), "a", {"value": "two"},
                                  memory_id="m2", version=1)])
    memory.write_scope("three", {"agent_id": "a"})  # the model is one event behind it
    assert reads
    def seen(entries: Any) -> list[tuple[Any, ...]]:
        return sorted((e.memory_id, e.value, e.version, e.last_position) for e in entries)

    assert seen(memory.read_model.read_scope(Scope("a"))) == \
        seen(fold(log.read()).entries.values())
    assert len(seen(fold(log.read()).entries.values())) == 3
    other.close()
    memory.close()
