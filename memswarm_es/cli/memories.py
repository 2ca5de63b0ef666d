"""``memswarm write | get | read | search | update | delete``: memories, as the operator or as
``--agent``.

Writes append to the log (made if it does not exist); reads never create one. A value is
text, or JSON with ``--json-value``; metadata is a JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from projections.fold import MemoryEntry

from ..errors import InvalidInputError
from .options import JSON_OBJECT, memswarm_command, scope_options, settings_of, store_options
from .output import emit_json, result, say, scope_cell, show_table
from .stores import memory_of


def _value(text: str, as_json: bool) -> Any:
    if not as_json:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"the value is not JSON ({exc}); drop --json-value to write "
                                "it as text") from None


def _show_entries(entries: Sequence[MemoryEntry], as_json: bool, more: int = 0) -> None:
    if as_json:
        emit_json([e.as_dict() for e in entries])
        return
    show_table(["position", "version", "agent/group/context", "memory id", "value"],
               [[e.position, e.version, scope_cell(e.agent_id, e.group_id, e.context_id),
                 e.memory_id, e.value] for e in entries])
    if more:
        say(f"more: {more} not shown (raise --limit)")


def add_commands(group: click.Group) -> None:
    """Register the memory commands on ``group``."""
    value_options = [
        click.option("--metadata", type=JSON_OBJECT, default=None,
                     help='metadata, a JSON object: \'{"confidence": 0.7}\''),
        click.option("--json-value", is_flag=True, help="VALUE is JSON, not text"),
        click.option("--event-id", default=None,
                     help="a retry with the same id is recorded once"),
    ]

    def with_value_options(fn: Any) -> Any:
        for option in reversed(value_options):
            fn = option(fn)
        return fn

    @memswarm_command(group, "write", "write a memory; prints its id")
    @click.argument("value")
    @scope_options
    @with_value_options
    @store_options()
    def write(value: str, agent_id: str | None, group_id: str | None, context_id: str | None,
              metadata: dict[str, Any] | None, json_value: bool, event_id: str | None,
              as_json: bool, **options: Any) -> int:
        meta = dict(metadata or {})
        meta.update({k: v for k, v in (("agent_id", agent_id), ("group_id", group_id)) if v})
        with memory_of(settings_of(options), create=True) as memory:
            memory_id = memory.write_scope(_value(value, json_value), meta, context_id,
                                           event_id=event_id)
            entry = memory.get(memory_id)
        result(as_json, {"memory_id": memory_id, "position": entry.position}, memory_id)
        return 0

    @memswarm_command(group, "get", "one live memory")
    @click.argument("memory_id")
    @store_options()
    def get(memory_id: str, as_json: bool, **options: Any) -> int:
        with memory_of(settings_of(options)) as memory:
            entry = memory.get(memory_id)
        if as_json:
            emit_json(entry.as_dict())
        else:
            for key, shown in entry.as_dict().items():
                say(f"{key:<11} {json.dumps(shown, default=str, ensure_ascii=False)}")
        return 0

    @memswarm_command(group, "read", "the live memories of a scope, oldest first")
    @scope_options
    @click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
    @store_options()
    def read(agent_id: str | None, group_id: str | None, context_id: str | None, limit: int,
             as_json: bool, **options: Any) -> int:
        with memory_of(settings_of(options)) as memory:
            entries = memory.read_scope(agent_id, group_id, context_id)
        _show_entries(entries[:limit], as_json, max(len(entries) - limit, 0))
        return 0

    @memswarm_command(group, "search", "memories closest in meaning to a query (a read model "
                                       "that searches: --read-model chroma:///path)")
    @click.argument("query")
    @scope_options
    @click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
    @click.option("--where", type=JSON_OBJECT, default=None,
                  help='a metadata filter: \'{"confidence": {"$gte": 0.5}}\'')
    @store_options()
    def search(query: str, agent_id: str | None, group_id: str | None, context_id: str | None,
               k: int, where: dict[str, Any] | None, as_json: bool, **options: Any) -> int:
        with memory_of(settings_of(options)) as memory:
            hits = memory.search(query, agent_id, group_id, context_id, k, where)
        if as_json:
            emit_json([{"distance": h.distance, **h.entry.as_dict()} for h in hits])
        else:
            show_table(["distance", "agent/group/context", "memory id", "value"],
                       [[f"{h.distance:.4f}", scope_cell(h.entry.agent_id, h.entry.group_id,
                                                         h.entry.context_id),
                         h.entry.memory_id, h.entry.value] for h in hits])
        return 0

    @memswarm_command(group, "update", "a new version of a memory; prints the version")
    @click.argument("memory_id")
    @click.argument("value")
    @click.option("--expected-version", type=click.IntRange(min=1), default=None,
                  help="refuse if the memory moved on from this version")
    @with_value_options
    @store_options()
    def update(memory_id: str, value: str, expected_version: int | None,
               metadata: dict[str, Any] | None, json_value: bool, event_id: str | None,
               as_json: bool, **options: Any) -> int:
        with memory_of(settings_of(options)) as memory:
            version = memory.update(memory_id, _value(value, json_value), metadata,
                                    expected_version=expected_version, event_id=event_id)
        result(as_json, {"memory_id": memory_id, "version": version},
               f"{memory_id} is at version {version}")
        return 0

    @memswarm_command(group, "delete", "delete a memory (the log keeps every version)")
    @click.argument("memory_id")
    @click.option("--expected-version", type=click.IntRange(min=1), default=None)
    @click.option("--event-id", default=None)
    @store_options()
    def delete(memory_id: str, expected_version: int | None, event_id: str | None,
               as_json: bool, **options: Any) -> int:
        with memory_of(settings_of(options)) as memory:
            version = memory.delete(memory_id, expected_version=expected_version,
                                    event_id=event_id)
        result(as_json, {"memory_id": memory_id, "version": version},
               f"deleted {memory_id} (its last version was {version})")
        return 0
