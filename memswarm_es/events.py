"""Events: the immutable records that are the truth of a memory.

A caller builds a :class:`NewEvent`; the log records it as an :class:`Event`, giving it a
``position``, a ``recorded_at`` time and a ``hash`` chained to the event before it. The chain
covers the event's header and the *hash* of its payload, so a payload can be redacted later
(``payload=None``) and the chain still verifies.

A recorded payload starts with a random salt (:data:`SALT_MARK` and 16 bytes), so its hash,
which stays after a redaction, cannot confirm a guess of the content that was erased with it.

Content is checked at the door (:func:`check_content`) and again when an event is read
(:meth:`Event.content`): what is recorded round-trips through msgpack unchanged in meaning, and
an event that fails the check (written by another program, or damaged) reads as damaged instead
of stopping a fold.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, SupportsIndex, SupportsInt

import msgpack

from .errors import InvalidValueError
from .scopes import Scope, check_id, stored_scope

SCHEMA_VERSION = 1
GENESIS_HASH = bytes(32)
MAX_DEPTH = 64  # containers inside containers, the value itself counting as depth 1
SALT_MARK = b"\xc1"  # a byte msgpack never uses: what follows is a salt, then the payload
SALT_BYTES = 16
_INT_RANGE = (-(1 << 63), (1 << 64) - 1)
# The fields whose content every read model holds; the others (a carried vector, a reason) are
# checked by whoever reads them, so a strange one does not damage the memory.
CONTENT_FIELDS = frozenset({"value", "metadata"})
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class EventType:
    """The event types MemSwarm writes."""

    MEMORY_WRITTEN = "memory.written"
    MEMORY_UPDATED = "memory.updated"
    MEMORY_DELETED = "memory.deleted"
    MEMORY_FORGOTTEN = "memory.forgotten"  # the payloads of every earlier version are redacted
    # Memberships: scope (agent_id, group_id) says who and which group; no memory id.
    GROUP_JOINED = "group.joined"  # payload {"admin": bool}: joins, or changes the admin flag
    GROUP_LEFT = "group.left"


MEMORY_EVENT_TYPES = frozenset({
    EventType.MEMORY_WRITTEN, EventType.MEMORY_UPDATED, EventType.MEMORY_DELETED,
    EventType.MEMORY_FORGOTTEN,
})
ENDING_EVENT_TYPES = frozenset({EventType.MEMORY_DELETED, EventType.MEMORY_FORGOTTEN})
MEMBERSHIP_EVENT_TYPES = frozenset({EventType.GROUP_JOINED, EventType.GROUP_LEFT})


def new_id() -> str:
    """A new time-ordered id (a UUIDv7 of RFC 9562: 48 bits of Unix milliseconds, then 74
    random bits), so that indexes on ids stay append-mostly. Built from the bits directly:
    a uuid.UUID object and its checks cost several times more, on every write."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    text = "%032x" % (value & _UUID7_CLEAR | _UUID7_SET)
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# The version (7) and variant (0b10) bits of a UUIDv7, over 128 bits.
_UUID7_SET = 0x7 << 76 | 0x2 << 62
_UUID7_CLEAR = ~(0xF << 76 | 0x3 << 62) & ((1 << 128) - 1)


def encode(obj: object) -> bytes:
    """msgpack-encode ``obj``, raising :class:`InvalidValueError` for what msgpack cannot carry."""
    try:
        return msgpack.packb(obj, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidValueError(f"value cannot be stored: {exc}") from exc


def decode(data: bytes) -> Any:
    """Inverse of :func:`encode` (map keys of any type are read: the checks name them)."""
    try:  # msgpack's defaults (raw=False, text or bytes keys): passing keywords costs as much
        return msgpack.unpackb(data)  # as decoding a small payload, and fails on nothing else
    except ValueError:  # a key of another type, or not msgpack: the lenient decode says which
        return msgpack.unpackb(data, raw=False, strict_map_key=False)


def content_problem(obj: object, path: str = "value") -> str | None:
    """Why ``obj`` cannot be stored as memory content, or ``None`` if it can.

    Content is ``None``, bools, ints of 64 bits, finite floats, UTF-8 text, bytes, lists (tuples
    come back as lists) and dicts with text keys, nested at most :data:`MAX_DEPTH` deep: exactly
    what msgpack carries unchanged in meaning. Every fold checks every payload, so the common
    case is a fast walk that names nothing; only content it cannot pass is walked again to say
    where the problem is.
    """
    return None if _storable(obj, 1) else _where_not_storable(obj, path)


def _storable(item: Any, depth: int) -> bool:
    """True if :func:`content_problem` finds nothing in ``item`` (at ``depth``); False also
    where it cannot tell at once (subclasses of the plain types: the full walk decides).
    Recursion stops at :data:`MAX_DEPTH`; the items of a container that are not containers
    (text, numbers: the most common) are checked in place, without a call each."""
    kind = type(item)
    if kind is dict:
        if item and depth >= MAX_DEPTH:
            return False
        for key, inner in item.items():
            if type(key) is not str or not (key.isascii() or _utf8(key)):
                return False
            kind = type(inner)
            if kind is str:
                if not (inner.isascii() or _utf8(inner)):
                    return False
            elif kind is int:
                if not _INT_LOW <= inner <= _INT_HIGH:
                    return False
            elif kind is float:
                if inner - inner != 0.0:  # infinite, or not a number
                    return False
            elif not (inner is None or kind is bool or kind is bytes
                      or _storable(inner, depth + 1)):
                return False
        return True
    if kind is list or kind is tuple:
        if item and depth >= MAX_DEPTH:
            return False
        for inner in item:
            kind = type(inner)
            if kind is str:
                if not (inner.isascii() or _utf8(inner)):
                    return False
            elif kind is int:
                if not _INT_LOW <= inner <= _INT_HIGH:
                    return False
            elif kind is float:
                if inner - inner != 0.0:
                    return False
            elif not (inner is None or kind is bool or kind is bytes
                      or _storable(inner, depth + 1)):
                return False
        return True
    if kind is str:
        return item.isascii() or _utf8(item)
    if kind is int:
        return _INT_RANGE[0] <= item <= _INT_RANGE[1]
    if kind is float:
        return math.isfinite(item)
    return item is None or kind is bool or kind is bytes


_INT_LOW, _INT_HIGH = _INT_RANGE


def _plain_payload(data: dict[Any, Any]) -> bool:
    """True if ``payload_problem(data, CONTENT_FIELDS)`` finds nothing, told at once for the
    payloads MemSwarm writes; False where it cannot tell (``payload_problem`` decides)."""
    for key, item in data.items():
        if type(key) is not str:
            return False
        if key == "value":
            kind = type(item)
            if kind is str:
                if not (item.isascii() or _utf8(item)):
                    return False
            elif not _storable(item, 1):
                return False
        elif key == "metadata" and (type(item) is not dict or not _storable(item, 1)):
            return False
    return True


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _where_not_storable(obj: object, path: str) -> str | None:
    """:func:`content_problem`'s full walk, naming where the problem is. Iterative, so no
    input can exhaust the stack."""
    stack: list[tuple[object, int, str]] = [(obj, 1, path)]
    while stack:
        item, depth, path = stack.pop()
        if item is None or isinstance(item, (bool, bytes)):
            continue
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{path} is not valid UTF-8 text"
        elif isinstance(item, int):
            if not _INT_RANGE[0] <= item <= _INT_RANGE[1]:
                return f"{path} is an int outside 64 bits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{path} is not a finite number"
        elif isinstance(item, (list, tuple, dict)):
            if depth >= MAX_DEPTH and item:
                return f"{path} is nested deeper than {MAX_DEPTH} levels"
            if isinstance(item, dict):
                for key, inner in item.items():
                    if not isinstance(key, str):
                        return f"{path} has a key of type {type(key).__name__}; keys are text"
                    stack.append((key, depth + 1, f"{path} key"))
                    stack.append((inner, depth + 1, f"{path}[{key!r}]"))
            else:
                stack.extend((inner, depth + 1, f"{path}[{i}]") for i, inner in enumerate(item))
        else:
            return f"{path} is a {type(item).__name__}, which cannot be stored"
    return None


def encode_content(data: Mapping[str, Any]) -> bytes:
    """Check and encode a payload at the door: :class:`InvalidValueError` if it cannot be
    stored unchanged in meaning (see :func:`content_problem`)."""
    problem = payload_problem(data)
    if problem:
        raise InvalidValueError(problem)
    return encode(dict(data))


def payload_problem(data: Mapping[Any, Any],
                    fields: Collection[str] | None = None) -> str | None:
    """:func:`content_problem` for each field of a payload (or each of ``fields``; a value gets
    the whole depth); ``metadata``, where present, is a map."""
    if not isinstance(data.get("metadata", {}), dict):
        return "metadata is not a map"
    for key, item in data.items():
        if not isinstance(key, str):
            return f"a payload field is named by a {type(key).__name__}"
        if fields is not None and key not in fields:
            continue
        problem = content_problem(item, key)
        if problem:
            return problem
    return None


def check_ids(event: NewEvent | Event) -> None:
    """Raise :class:`InvalidIdError` unless the event id, type, actor and memory id of
    ``event`` are ids that :func:`check_id` accepts."""
    check_id(event.event_id, "event_id")
    check_id(event.type, "type")
    check_id(event.actor, "actor")
    if event.memory_id is not None:
        check_id(event.memory_id, "memory_id")


def to_micros(moment: datetime) -> int:
    """A UTC datetime as integer microseconds since the epoch (exact)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    """Inverse of :func:`to_micros` (exact)."""
    return EPOCH + timedelta(microseconds=micros)


def now_micros() -> int:
    """The time now, in microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event not yet recorded. ``payload`` is already msgpack-encoded."""

    type: str
    scope: Scope
    actor: str
    payload: bytes
    memory_id: str | None = None
    version: int | None = None
    event_id: str = field(default_factory=new_id)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_ids(self)
        if (self.memory_id is None) != (self.version is None):
            raise InvalidValueError("memory_id and version go together")

    @classmethod
    def create(cls, type: str, scope: Scope, actor: str, data: Mapping[str, Any],
               **kwargs: Any) -> NewEvent:
        """Build an event from a payload mapping, checking and encoding it."""
        return cls(type=type, scope=scope, actor=actor, payload=encode_content(data), **kwargs)

    def same_as(self, recorded: Event) -> bool:
        """True if ``recorded`` is this event (used to tell a retry from a reused event_id).

        A recorded event whose payload was redacted (forgotten) is answered as the same for
        any payload: nothing is left to compare, and no answer may confirm a guess of it.
        """
        return (
            recorded.event_id == self.event_id
            and recorded.type == self.type
            and recorded.scope == self.scope
            and recorded.actor == self.actor
            and recorded.memory_id == self.memory_id
            and recorded.holds(self.payload)
        )


class Event(NamedTuple):
    """A recorded event. ``payload`` is ``None`` once redacted; ``payload_hash`` always stays.
    An immutable value built at C speed (a tuple of its fields): logs read and fold events by
    the hundred thousand."""

    position: int
    event_id: str
    type: str
    scope: Scope
    actor: str
    memory_id: str | None
    version: int | None
    recorded_at_us: int
    payload: bytes | None
    payload_hash: bytes
    hash: bytes
    schema: int = SCHEMA_VERSION

    @property
    def recorded_at(self) -> datetime:
        """When the log recorded the event (UTC)."""
        return from_micros(self.recorded_at_us)

    @property
    def body(self) -> bytes | None:
        """The msgpack payload without its salt; ``None`` if it was redacted."""
        payload = self.payload
        if payload is None or payload[:1] != SALT_MARK:
            return payload  # redacted, or recorded before payloads were salted
        return payload[1 + SALT_BYTES:]

    def holds(self, body: bytes) -> bool:
        """True if this event's payload is ``body`` (or was redacted: see ``same_as``)."""
        return self.payload is None or self.body == body

    @property
    def data(self) -> dict[str, Any] | None:
        """The decoded, upcast payload; ``None`` if it was redacted. Raises for a payload that
        cannot be decoded: folds use :meth:`content`, which never raises."""
        body = self.body
        if body is None:
            return None
        return upcast(self.type, self.schema, decode(body))

    def content(self) -> tuple[dict[str, Any] | None, str | None]:
        """``(data, None)``, or ``(None, why)`` when the payload cannot be read as content that
        MemSwarm could have recorded. ``(None, None)`` for a redacted payload. Never raises.

        Every fold reads every payload through here: :attr:`data` inlined, and the content
        walked once by :func:`_plain_payload` (the walk that names a problem only when it
        cannot pass the content at once)."""
        payload = self.payload
        if payload is None:
            return None, None
        try:
            body = payload[_BODY_AT:] if payload[:1] == SALT_MARK else payload
            try:  # decode(body), inlined
                data = _unpackb(body)
            except ValueError:
                data = _unpackb(body, raw=False, strict_map_key=False)
            if self.schema < SCHEMA_VERSION:
                data = upcast(self.type, self.schema, data)
        except Exception as exc:  # any payload at all: another program's, or damaged
            return None, f"payload cannot be decoded ({type(exc).__name__}: {exc})"
        if type(data) is dict and _plain_payload(data):
            return data, None
        if data is None:  # (an upcaster's answer)
            return None, None
        if not isinstance(data, dict):
            return None, f"payload is a {type(data).__name__}, not a map"
        problem = payload_problem(data, CONTENT_FIELDS)
        return (None, problem) if problem else (data, None)

    def header(self) -> bytes:
        """The bytes the hash chain covers, besides the previous hash."""
        return header_bytes(
            self.schema, self.position, self.event_id, self.type, self.scope, self.actor,
            self.memory_id, self.version, self.recorded_at_us, self.payload_hash,
        )

    def expected_hash(self, prev_hash: bytes) -> bytes:
        return chain_hash(prev_hash, self.header())


_new_event = tuple.__new__
_unpackb = msgpack.unpackb
_BODY_AT = len(SALT_MARK) + SALT_BYTES


def payload_hash(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def header_bytes(schema: int, position: int, event_id: str, type: str, scope: Scope, actor: str,
                 memory_id: str | None, version: int | None, recorded_at_us: int,
                 p_hash: bytes) -> bytes:
    try:
        pack = _packers.pack
    except AttributeError:  # this thread's first: a Packer is not to be shared between threads
        pack = _packers.pack = msgpack.Packer(use_bin_type=True).pack
    return pack([schema, position, event_id, type, scope.agent_id, scope.group_id,
                 scope.context_id, actor, memory_id, version, recorded_at_us, p_hash])


_packers = threading.local()  # each thread's header packer (not making one per header)


def chain_hash(prev_hash: bytes, header: bytes) -> bytes:
    return hashlib.sha256(prev_hash + header).digest()


def salted(body: bytes) -> bytes:
    """``body`` behind a new random salt, as a log records it."""
    return SALT_MARK + os.urandom(SALT_BYTES) + body


def seal(new: NewEvent, position: int, recorded_at_us: int, prev_hash: bytes) -> Event:
    """Record ``new`` at ``position``: the one place where an event's hash is made."""
    payload = salted(new.payload)
    p_hash = payload_hash(payload)
    header = header_bytes(new.schema, position, new.event_id, new.type, new.scope, new.actor,
                          new.memory_id, new.version, recorded_at_us, p_hash)
    return _new_event(Event, (
        position, new.event_id, new.type, new.scope, new.actor, new.memory_id, new.version,
        recorded_at_us, payload, p_hash, chain_hash(prev_hash, header), new.schema))


def membership_event(agent_id: str, group_id: str, admin: bool | None, actor: str) -> NewEvent:
    """``agent_id`` joining ``group_id`` (or changing its admin flag), or leaving it when
    ``admin`` is ``None``, done by ``actor``."""
    check_id(agent_id, "agent_id")
    check_id(group_id, "group_id")
    if admin is not None and not isinstance(admin, bool):
        raise InvalidValueError(f"admin must be True or False, not {admin!r}")
    if admin is None:
        return NewEvent.create(EventType.GROUP_LEFT, Scope(agent_id, group_id), actor, {})
    return NewEvent.create(EventType.GROUP_JOINED, Scope(agent_id, group_id), actor,
                           {"admin": admin})


# --- the row codec ------------------------------------------------------------------------------

# An event as a row of stored values, in this order: the SQL log's columns, a GCS batch's rows.
ROW_FIELDS = (
    "position", "event_id", "type", "agent_id", "group_id", "context_id", "actor", "memory_id",
    "version", "recorded_at", "schema", "payload", "payload_hash", "hash",
)
Row = tuple[int, str, str, str | None, str | None, str | None, str, str | None, int | None, int,
            int, bytes | None, bytes, bytes]


def event_row(event: Event) -> Row:
    """The values of ``event`` in the order of :data:`ROW_FIELDS`."""
    return (event.position, event.event_id, event.type, event.scope.agent_id,
            event.scope.group_id, event.scope.context_id, event.actor, event.memory_id,
            event.version, event.recorded_at_us, event.schema, event.payload,
            event.payload_hash, event.hash)


def event_from_row(row: Sequence[object]) -> Event:
    """An event from the values of a row (in the order of :data:`ROW_FIELDS`), every value
    brought to its field's type: a row damaged by hand (another storage type, say) still reads,
    and ``verify()`` names it, since its hash no longer matches. Stores that must refuse such a
    row check its types first."""
    (position, event_id, kind, agent_id, group_id, context_id, actor, memory_id, version,
     recorded_at, schema, payload, p_hash, hash) = row
    return _new_event(Event, (
        _int(position), _text(event_id), _text(kind),
        stored_scope(_text_or_none(agent_id), _text_or_none(group_id),
                     _text_or_none(context_id)),
        _text(actor), _text_or_none(memory_id), None if version is None else _int(version),
        _int(recorded_at), None if payload is None else _blob(payload), _blob(p_hash),
        _blob(hash), _int(schema)))


def events_from_rows(rows: Iterable[Sequence[object]]) -> list[Event]:
    """``[event_from_row(row) for row in rows]``, faster: a row whose values all have their
    field's type already (every row a store wrote, read back) is taken as it is, exactly as
    :func:`event_from_row` would take it; any other row goes through it."""
    out: list[Event] = []
    append = out.append
    for row in rows:
        (position, event_id, kind, agent_id, group_id, context_id, actor, memory_id, version,
         recorded_at, schema, payload, p_hash, hash) = row
        if (type(position) is int and type(event_id) is str and type(kind) is str
                and type(actor) is str and type(recorded_at) is int and type(schema) is int
                and type(p_hash) is bytes and type(hash) is bytes
                and (agent_id is None or type(agent_id) is str)
                and (group_id is None or type(group_id) is str)
                and (context_id is None or type(context_id) is str)
                and (memory_id is None or type(memory_id) is str)
                and (version is None or type(version) is int)
                and (payload is None or type(payload) is bytes)):
            append(_new_event(Event, (
                position, event_id, kind, stored_scope(agent_id, group_id, context_id), actor,
                memory_id, version, recorded_at, payload, p_hash, hash, schema)))
        else:
            append(event_from_row(row))
    return out


def _text(value: object) -> str:
    if type(value) is str:
        return value
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def _text_or_none(value: object) -> str | None:
    return None if value is None else _text(value)


def _int(value: object) -> int:
    if type(value) is int:
        return value
    if isinstance(value, (str, bytes, bytearray, SupportsInt, SupportsIndex)):
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            pass
    return -1


def _blob(value: object) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "replace")


# --- upcasting -----------------------------------------------------------------------------------

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(type: str, from_schema: int, fn: Upcaster) -> None:
    """Register ``fn`` to turn a ``type`` payload of ``from_schema`` into ``from_schema + 1``."""
    UPCASTERS[(type, from_schema)] = fn


def upcast(type: str, schema: int, data: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored payload up to the current schema, one step at a time."""
    while schema < SCHEMA_VERSION:
        data = UPCASTERS[(type, schema)](data)
        schema += 1
    return data
