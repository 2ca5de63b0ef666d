"""What the tools answer: memories, versions and events as plain JSON values. Pure functions."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from projections.fold import MemoryEntry

from ...audit import MemoryVersion
from ...events import Event, from_micros
from ...scopes import Scope


def plain(value: Any) -> Any:
    """``value`` as JSON can carry it: tuples as lists, bytes as ``{"base64": ...}``, times
    in ISO 8601 (another writer of the log may have stored what JSON does not have)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _scope(scope: Scope) -> dict[str, str]:
    return {name: id_ for name, id_ in
            (("agent_id", scope.agent_id), ("group_id", scope.group_id),
             ("context_id", scope.context_id)) if id_ is not None}


def entry(found: MemoryEntry) -> dict[str, Any]:
    """A live memory."""
    out = {"memory_id": found.memory_id, "value": plain(found.value),
           "metadata": plain(found.metadata), **_scope(found.scope),
           "version": found.version, "created_at": found.created_at.isoformat(),
           "created_by": found.created_by, "updated_at": found.updated_at.isoformat(),
           "updated_by": found.updated_by, "readable_by": list(found.readable_by),
           "writable_by": list(found.writable_by)}
    if found.damaged:
        out["damaged"] = found.damaged
    return out


def version(found: MemoryVersion) -> dict[str, Any]:
    """One version in a memory's history."""
    out = {"version": found.version, "type": found.type, "value": plain(found.value),
           "metadata": plain(found.metadata), "actor": found.actor,
           "position": found.position, "recorded_at": found.recorded_at.isoformat(),
           **_scope(found.scope)}
    if found.redacted:
        out["erased"] = True  # its content was forgotten
    if found.reason is not None:
        out["reason"] = found.reason  # why, on the forget itself
    return out


def event(found: Event) -> dict[str, Any]:
    """An event's header: who did what to which memory, when."""
    out: dict[str, Any] = {"position": found.position, "type": found.type,
                           "actor": found.actor,
                           "recorded_at": from_micros(found.recorded_at_us).isoformat(),
                           **_scope(found.scope)}
    if found.memory_id is not None:
        out["memory_id"] = found.memory_id
        out["version"] = found.version
    return out
