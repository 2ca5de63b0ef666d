"""What the GCS log takes in from outside is checked: a batch object written by another program
is a :class:`CorruptLogError` naming the object, never a TypeError from deep inside, and
imported events carry only ids that :func:`check_id` accepts and fields of the row's types."""

from __future__ import annotations

import uuid
from typing import Any

import hypothesis.strategies as st
import msgpack
import pytest
from google.cloud import storage
from hypothesis import HealthCheck, given, settings

from memswarm_es.errors import CorruptLogError, InvalidIdError, InvalidValueError, MemSwarmError
from memswarm_es.events import (
    GENESIS_HASH,
    Event,
    EventType,
    NewEvent,
    chain_hash,
    header_bytes,
)
from memswarm_es.log.base import problem_with
from memswarm_es.log.gcs import FORMAT, GCSEventLog, _decode_batch, _encode_batch
from memswarm_es.log.inprocess import InMemoryEventLog
from memswarm_es.scopes import Scope, check_id


def sealed_events(count: int = 2) -> list[Event]:
    log = InMemoryEventLog()
    for i in range(count):
        log.append([NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a", "g"), "a",
                                    {"value": i, "metadata": {}}, memory_id=f"m{i}",
                                    version=1)])
    return log.read()


def rows_of(events: list[Event]) -> list[list[Any]]:
    return msgpack.unpackb(_encode_batch(events), raw=False)[1]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def check_decoded(name: str, data: bytes) -> None:
    """Decoding ``data`` gives well-typed events that the chain check can judge, or a
    :class:`CorruptLogError` naming the object; never any other exception."""
    try:
        events = _decode_batch(name, data)
    except CorruptLogError as exc:
        assert name in str(exc)
        return
    prev = GENESIS_HASH
    for event in events:
        assert isinstance(event.payload, (bytes, type(None)))
        assert (event.memory_id is None) == (event.version is None)
        assert isinstance(event.hash, bytes) and isinstance(event.payload_hash, bytes)
        event.recorded_at  # noqa: B018 - a time a datetime can hold
        problem_with(event, event.position, prev)
        prev = event.hash


scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
           | st.text(max_size=8) | st.binary(max_size=40))
keys = st.text(max_size=4) | st.integers(-9, 9)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=3), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_corrupt_not_a_crash(data: bytes) -> None:
    check_decoded("log/x", data)


@settings(max_examples=400, deadline=None)
@given(rows=values)
def test_any_rows_are_corrupt_not_a_crash(rows: Any) -> None:
    check_decoded("log/x", pack([FORMAT, rows]))
    check_decoded("log/x", pack([FORMAT, [rows]]))
    check_decoded("log/x", pack(rows))


@settings(max_examples=600, deadline=None)
@given(field=st.integers(0, 13), value=values, row=st.integers(0, 1),
       cut=st.integers(0, 14))
def test_a_good_batch_with_one_strange_field_is_corrupt_not_a_crash(
        field: int, value: Any, row: int, cut: int) -> None:
    rows = rows_of(sealed_events())
    rows[row][field] = value
    check_decoded("log/x", pack([FORMAT, rows]))
    rows[row] = rows[row][:cut]
    check_decoded("log/x", pack([FORMAT, rows]))


def test_truncated_and_deeply_nested_batches_are_corrupt() -> None:
    data = _encode_batch(sealed_events())
    for end in range(len(data)):
        check_decoded("log/x", data[:end])
    with pytest.raises(CorruptLogError):
        _decode_batch("log/x", b"\x91" * 200_000 + b"\xc0")
    with pytest.raises(CorruptLogError):
        _decode_batch("log/x", pack([FORMAT, [None] * 3]))


STRANGE = [(11, "text, not bytes"), (11, 5), (0, 2.0), (0, True), (13, 7), (12, None),
           (9, 10**19), (9, -(2**63)), (2, b"memory.written"), (4, 5), (8, "1"), (10, []),
           (8, None), (7, None)]


@pytest.mark.parametrize(("field", "value"), STRANGE)
def test_a_batch_from_another_program_is_reported_naming_the_object(
        gcs_bucket: str, gcs_prefix: str, gcs_client: storage.Client, field: int,
        value: Any) -> None:
    log = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    first, second = sealed_events()
    log.import_events([first])
    row = rows_of([second])[0]
    row[field] = value
    name = f"{gcs_prefix}log/{2:020d}"
    gcs_client.bucket(gcs_bucket).blob(name).upload_from_string(pack([FORMAT, [row]]))
    for reader in (GCSEventLog(gcs_bucket, gcs_prefix, gcs_client).read,
                   GCSEventLog(gcs_bucket, gcs_prefix, gcs_client).head,
                   log.read, log.verify):
        with pytest.raises(CorruptLogError, match=name):
            reader()


def test_a_batch_name_with_other_digits_is_reported(
        gcs_bucket: str, gcs_prefix: str, gcs_client: storage.Client) -> None:
    GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    gcs_client.bucket(gcs_bucket).blob(f"{gcs_prefix}log/{'²' * 20}").upload_from_string(b"")
    with pytest.raises(CorruptLogError, match="not a batch"):
        GCSEventLog(gcs_bucket, gcs_prefix, gcs_client).read()


# --- ids of imported events ----------------------------------------------------------------------


def forged_scope(agent_id: Any) -> Scope:
    """A scope as another program might hand one over, its ids never checked."""
    scope = object.__new__(Scope)
    for name, value in (("agent_id", agent_id), ("group_id", "g"), ("context_id", None)):
        object.__setattr__(scope, name, value)
    return scope


def forge(events: list[Event], index: int, field: str, value: Any) -> list[Event]:
    """``events`` with one id replaced and the chain sealed again over it where it can be."""
    changes = {"scope": forged_scope(value)} if field == "agent_id" else {field: value}
    events = [*events[:index], events[index]._replace(**changes),
              *events[index + 1:]]
    prev, resealed = GENESIS_HASH, []
    for e in events:
        try:
            link = chain_hash(prev, header_bytes(
                e.schema, e.position, e.event_id, e.type, e.scope, e.actor, e.memory_id,
                e.version, e.recorded_at_us, e.payload_hash))
        except (TypeError, ValueError):
            link = e.hash
        resealed.append(e._replace(hash=link))
        prev = link
    return resealed


def storable(value: Any) -> bool:
    """An id the log may record: :func:`check_id` accepts it and it is UTF-8 text."""
    try:
        check_id(value, "id")
        value.encode("utf-8")
    except (InvalidIdError, UnicodeError):
        return False
    return True


ID_FIELDS = ["event_id", "type", "actor", "memory_id", "agent_id"]
BAD_IDS = ["", "\x00", "x" * 600, 7, b"bytes", "\udc80", "a\udfffb"]


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize("value", BAD_IDS)
def test_import_refuses_an_id_the_log_cannot_carry(
        gcs_bucket: str, gcs_prefix: str, gcs_client: storage.Client, field: str,
        value: Any) -> None:
    log = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    with pytest.raises((InvalidIdError, InvalidValueError)):
        log.import_events(forge(sealed_events(), 1, field, value))
    assert list(gcs_client.list_blobs(gcs_bucket, prefix=f"{gcs_prefix}log/")) == []
    assert GCSEventLog(gcs_bucket, gcs_prefix, gcs_client).head() == 0


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(ID_FIELDS),
       value=st.text(st.sampled_from(["a", "é", "\n", "\x1b", "\x7f", "\u2028", "\udc80",
                                      "\x00", "%", ":"]), min_size=1, max_size=5))
def test_import_records_an_id_exactly_when_check_id_accepts_it(
        gcs_bucket: str, gcs_client: storage.Client, field: str, value: str) -> None:
    """Whatever :func:`check_id` refuses (surrogates, NUL, control characters as it is made
    stricter) the import refuses with a typed error and writes nothing; what it accepts
    comes back unchanged from a fresh reader."""
    prefix = f"t-{uuid.uuid4().hex[:10]}/"
    log = GCSEventLog(gcs_bucket, prefix, gcs_client)
    events = forge(sealed_events(), 1, field, value)
    if storable(value):
        assert log.import_events(events) == 2
        assert GCSEventLog(gcs_bucket, prefix, gcs_client).read() == events
    else:
        with pytest.raises(MemSwarmError):
            log.import_events(events)
        assert GCSEventLog(gcs_bucket, prefix, gcs_client).head() == 0
