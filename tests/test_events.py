"""Events and scopes: encoding, the hash chain over header and payload hash, upcasting, keys."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given

from memswarm_es import events as ev
from memswarm_es.errors import InvalidIdError, InvalidScopeError, InvalidValueError
from memswarm_es.events import EventType, NewEvent, seal
from memswarm_es.scopes import Scope, scope_key


def new(**kw: object) -> NewEvent:
    fields = {"type": EventType.MEMORY_WRITTEN, "scope": Scope("a", "g"), "actor": "a",
              "data": {"value": "v", "metadata": {}}, "memory_id": "m1", "version": 1}
    fields.update(kw)
    return NewEvent.create(**fields)  # type: ignore[arg-type]


def test_hash_covers_every_header_field_and_the_payload() -> None:
    base = seal(new(event_id="e1"), 1, 1000, ev.GENESIS_HASH)
    variants = [
        seal(new(event_id="e2"), 1, 1000, ev.GENESIS_HASH),
        seal(new(event_id="e1"), 2, 1000, ev.GENESIS_HASH),
        seal(new(event_id="e1"), 1, 1001, ev.GENESIS_HASH),
        seal(new(event_id="e1"), 1, 1000, b"\x01" * 32),
        seal(new(event_id="e1", actor="b"), 1, 1000, ev.GENESIS_HASH),
        seal(new(event_id="e1", scope=Scope("a", "h")), 1, 1000, ev.GENESIS_HASH),
        seal(new(event_id="e1", data={"value": "w"}), 1, 1000, ev.GENESIS_HASH),
        seal(new(event_id="e1", version=2), 1, 1000, ev.GENESIS_HASH),
        seal(new(event_id="e1", type=EventType.MEMORY_UPDATED), 1, 1000, ev.GENESIS_HASH),
    ]
    assert len({base.hash, *(v.hash for v in variants)}) == len(variants) + 1


def test_a_redacted_payload_still_verifies() -> None:
    event = seal(new(), 1, 1000, ev.GENESIS_HASH)
    redacted = event._replace(payload=None)
    assert redacted.expected_hash(ev.GENESIS_HASH) == event.hash
    assert redacted.data is None
    forged = event._replace(payload_hash=ev.payload_hash(b"other"))
    assert forged.expected_hash(ev.GENESIS_HASH) != event.hash


@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                    | st.floats(allow_nan=False) | st.text() | st.binary(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_msgpack_round_trip(value: object) -> None:
    assert ev.decode(ev.encode(value)) == value


@pytest.mark.parametrize("value", [object(), {1.5j}, 2**64, lambda: 1])
def test_values_msgpack_cannot_carry_are_typed_errors(value: object) -> None:
    with pytest.raises(InvalidValueError):
        ev.encode(value)


def test_micros_are_exact() -> None:
    for micros in (0, 1, 1_795_000_000_123_457, 4_102_444_800_000_001):
        assert ev.to_micros(ev.from_micros(micros)) == micros


def test_old_payloads_are_upcast_on_read(monkeypatch: pytest.MonkeyPatch) -> None:
    old = seal(new(data={"text": "hello"}), 1, 1000, ev.GENESIS_HASH)._replace(schema=0)
    monkeypatch.setattr(ev, "UPCASTERS", {})
    ev.register_upcaster(EventType.MEMORY_WRITTEN, 0,
                         lambda d: {"value": d["text"], "metadata": {}})
    assert old.data == {"value": "hello", "metadata": {}}


def test_new_event_checks_its_ids() -> None:
    with pytest.raises(InvalidIdError):
        new(event_id="")
    with pytest.raises(InvalidIdError):
        new(actor=None)
    with pytest.raises(InvalidValueError):
        new(version=None)


def test_scope_keys_never_collide() -> None:
    ids = ["a", "ab", "a:b", "a_b", "a-b", "a/b", "*", "%", "a%3Ab", "a%b", ":", "%3A", "日本"]
    keys = {scope_key(name, i) for name in ("agent_id", "group_id", "context_id") for i in ids}
    assert len(keys) == 3 * len(ids)
    with pytest.raises(InvalidScopeError):
        scope_key("team_id", "x")


def test_scope_query_matching() -> None:
    assert Scope().matches(Scope("a", "g", "c"))
    assert Scope(agent_id="a").matches(Scope("a", None, "c"))
    assert not Scope(group_id="g").matches(Scope("a", None, None))
    with pytest.raises(InvalidScopeError):
        Scope.from_kwargs({"team_id": "t"})


def test_an_event_round_trips_through_its_row() -> None:
    event = seal(NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a", None, "c"), "a",
                                 {"value": 1}, memory_id="m", version=1), 1, 7, ev.GENESIS_HASH)
    row = ev.event_row(event)
    assert len(row) == len(ev.ROW_FIELDS)
    assert ev.event_from_row(row) == event
    assert ev.event_from_row(list(row)) == event


def test_a_row_damaged_by_hand_still_reads_as_an_event() -> None:
    """Stored values of other types (as a hand-edited database holds) are brought to their
    field's type instead of failing: the chain check then names the event."""
    event = seal(NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a"), "a", {"value": 1},
                                 memory_id="m", version=1), 1, 7, ev.GENESIS_HASH)
    row: list[object] = list(ev.event_row(event))
    row[ev.ROW_FIELDS.index("position")] = "1"
    row[ev.ROW_FIELDS.index("version")] = "not a number"
    row[ev.ROW_FIELDS.index("actor")] = b"a"
    row[ev.ROW_FIELDS.index("payload")] = memoryview(event.payload or b"")
    row[ev.ROW_FIELDS.index("hash")] = "text"
    damaged = ev.event_from_row(row)
    assert (damaged.position, damaged.version, damaged.actor) == (1, -1, "a")
    assert damaged.payload == event.payload and damaged.hash == b"text"


class _Text(str):
    """A subclass of a content type: the quick walk leaves it to the one that names paths."""


_leaves = st.one_of(
    st.none(), st.booleans(), st.binary(max_size=4), st.text(max_size=4),
    st.integers(min_value=-(1 << 65), max_value=1 << 65), st.floats(),
    st.sampled_from(["\ud800", _Text("x"), 1j, object(), b"", 0.5]))
_content = st.recursive(_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner),
    st.dictionaries(st.one_of(st.text(max_size=3), st.integers(), st.just("\udcff")), inner,
                    max_size=3)), max_leaves=12)


@given(_content, st.integers(min_value=0, max_value=3))
def test_the_quick_content_check_agrees_with_the_walk_that_names_paths(value: object,
                                                                       nesting: int) -> None:
    for _ in range(nesting * 30):  # near and past the depth limit too
        value = [value]
    assert (ev.content_problem(value) is None) == (ev._where_not_storable(value, "value") is None)
