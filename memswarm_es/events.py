"""Events: the immutable records that are the truth of a memory.

A caller builds a :class:`NewEvent`; the log records it as an :class:`Event`, giving it a
``position``, a ``recorded_at`` time and a ``hash`` chained to the event before it. The chain
covers the event's header and the *hash* of its payload, so a payload can be redacted later
(``payload=None``) and the chain still verifies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import msgpack
import uuid6

from .errors import InvalidValueError
from .scopes import Scope, check_id

SCHEMA_VERSION = 1
GENESIS_HASH = bytes(32)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class EventType:
    """The event types MemSwarm writes."""

    MEMORY_WRITTEN = "memory.written"
    MEMORY_UPDATED = "memory.updated"
    MEMORY_DELETED = "memory.deleted"
    MEMORY_FORGOTTEN = "memory.forgotten"  # the payloads of every earlier version are redacted


MEMORY_EVENT_TYPES = frozenset({
    EventType.MEMORY_WRITTEN, EventType.MEMORY_UPDATED, EventType.MEMORY_DELETED,
    EventType.MEMORY_FORGOTTEN,
})
ENDING_EVENT_TYPES = frozenset({EventType.MEMORY_DELETED, EventType.MEMORY_FORGOTTEN})


def new_id() -> str:
    """A new time-ordered id (UUIDv7), so that indexes on ids stay append-mostly."""
    return str(uuid6.uuid7())


def encode(obj: Any) -> bytes:
    """msgpack-encode ``obj``, raising :class:`InvalidValueError` for what msgpack cannot carry."""
    try:
        return msgpack.packb(obj, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidValueError(f"value cannot be stored: {exc}") from exc


def decode(data: bytes) -> Any:
    """Inverse of :func:`encode`."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def to_micros(moment: datetime) -> int:
    """A UTC datetime as integer microseconds since the epoch (exact)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    """Inverse of :func:`to_micros` (exact)."""
    return EPOCH + timedelta(microseconds=micros)


def now_micros() -> int:
    return to_micros(datetime.now(timezone.utc))


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
        check_id(self.event_id, "event_id")
        check_id(self.type, "type")
        check_id(self.actor, "actor")
        if self.memory_id is not None:
            check_id(self.memory_id, "memory_id")
        if (self.memory_id is None) != (self.version is None):
            raise InvalidValueError("memory_id and version go together")

    @classmethod
    def create(cls, type: str, scope: Scope, actor: str, data: Mapping[str, Any],
               **kwargs: Any) -> NewEvent:
        """Build an event from a payload mapping, encoding it."""
        return cls(type=type, scope=scope, actor=actor, payload=encode(dict(data)), **kwargs)

    def same_as(self, recorded: Event) -> bool:
        """True if ``recorded`` is this event (used to tell a retry from a reused event_id)."""
        return (
            recorded.event_id == self.event_id
            and recorded.type == self.type
            and recorded.scope == self.scope
            and recorded.actor == self.actor
            and recorded.memory_id == self.memory_id
            and recorded.payload_hash == payload_hash(self.payload)
        )


@dataclass(frozen=True, slots=True)
class Event:
    """A recorded event. ``payload`` is ``None`` once redacted; ``payload_hash`` always stays."""

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
    def data(self) -> dict[str, Any] | None:
        """The decoded, upcast payload; ``None`` if it was redacted."""
        if self.payload is None:
            return None
        return upcast(self.type, self.schema, decode(self.payload))

    def header(self) -> bytes:
        """The bytes the hash chain covers, besides the previous hash."""
        return header_bytes(
            self.schema, self.position, self.event_id, self.type, self.scope, self.actor,
            self.memory_id, self.version, self.recorded_at_us, self.payload_hash,
        )

    def expected_hash(self, prev_hash: bytes) -> bytes:
        return chain_hash(prev_hash, self.header())


def payload_hash(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def header_bytes(schema: int, position: int, event_id: str, type: str, scope: Scope, actor: str,
                 memory_id: str | None, version: int | None, recorded_at_us: int,
                 p_hash: bytes) -> bytes:
    return msgpack.packb(
        [schema, position, event_id, type, scope.agent_id, scope.group_id, scope.context_id,
         actor, memory_id, version, recorded_at_us, p_hash],
        use_bin_type=True,
    )


def chain_hash(prev_hash: bytes, header: bytes) -> bytes:
    return hashlib.sha256(prev_hash + header).digest()


def seal(new: NewEvent, position: int, recorded_at_us: int, prev_hash: bytes) -> Event:
    """Record ``new`` at ``position``: the one place where an event's hash is made."""
    p_hash = payload_hash(new.payload)
    header = header_bytes(new.schema, position, new.event_id, new.type, new.scope, new.actor,
                          new.memory_id, new.version, recorded_at_us, p_hash)
    return Event(
        position=position, event_id=new.event_id, type=new.type, scope=new.scope,
        actor=new.actor, memory_id=new.memory_id, version=new.version,
        recorded_at_us=recorded_at_us, payload=new.payload, payload_hash=p_hash,
        hash=chain_hash(prev_hash, header), schema=new.schema,
    )


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
