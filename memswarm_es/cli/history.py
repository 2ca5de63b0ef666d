"""``memswarm history | audit | as-of | verify | forget``: the log as the system of record.

These commands read the log (no read model is folded unless ``--agent`` needs its access
decisions), never create one, and draw a progress bar on a terminal during long walks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from ..events import Event, from_micros
from ..log.base import Digest
from .options import (
    DIGEST,
    POSITION,
    TIME,
    memswarm_command,
    scope_options,
    settings_of,
    store_options,
)
from .output import emit_json, progress_bar, result, say, scope_cell, show_table
from .stores import memory_of, operator_memory


def _payload(event: Event) -> object:
    data, damaged = event.content()
    if damaged:
        return f"(damaged: {damaged})"
    return "(redacted)" if data is None else data


def _event_dict(event: Event) -> dict[str, Any]:
    return {"position": event.position, "recorded_at": event.recorded_at, "type": event.type,
            "actor": event.actor, "agent_id": event.scope.agent_id,
            "group_id": event.scope.group_id, "context_id": event.scope.context_id,
            "memory_id": event.memory_id, "version": event.version, "payload": _payload(event)}


def _events_table(events: Sequence[Event]) -> None:
    show_table(["position", "recorded at", "event", "actor", "agent/group/context", "memory",
                "version", "payload"],
               [[e.position, e.recorded_at, e.type, e.actor,
                 scope_cell(e.scope.agent_id, e.scope.group_id, e.scope.context_id),
                 e.memory_id, e.version, _payload(e)] for e in events])


def add_commands(group: click.Group) -> None:
    """Register the history commands on ``group``."""

    @memswarm_command(group, "history", "every version of one memory")
    @click.argument("memory_id")
    @store_options()
    def history(memory_id: str, as_json: bool, **options: Any) -> int:
        with memory_of(settings_of(options)) as memory:
            versions = memory.history(memory_id)
        if as_json:
            emit_json([{**dataclasses.asdict(v), "recorded_at": v.recorded_at}
                       for v in versions])
            return 0
        show_table(["version", "event", "actor", "recorded at", "position", "value / reason"],
                   [[v.version, v.type, v.actor, v.recorded_at, v.position,
                     "(redacted)" if v.redacted else f"(damaged: {v.damaged})" if v.damaged
                     else (v.reason if v.reason else v.value)] for v in versions])
        return 0

    @memswarm_command(group, "audit", "who wrote what, when: events matching filters, paged")
    @scope_options
    @click.option("--actor", default=None, help="events made by this actor")
    @click.option("--since", type=TIME, default=None, help="ISO time, inclusive (UTC if no "
                                                           "offset)")
    @click.option("--until", type=TIME, default=None, help="ISO time, exclusive")
    @click.option("--after", type=POSITION, default=0, help="the position to page after")
    @click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
    @store_options()
    def audit(agent_id: str | None, group_id: str | None, context_id: str | None,
              actor: str | None, since: datetime | None, until: datetime | None, after: int,
              limit: int, as_json: bool, **options: Any) -> int:
        with memory_of(settings_of(options)) as memory:
            page = memory.audit(actor=actor, agent_id=agent_id, group_id=group_id,
                                context_id=context_id, since=since, until=until, after=after,
                                limit=limit)
        if as_json:
            emit_json({"events": [_event_dict(e) for e in page.events],
                       "next_after": page.next_after})
            return 0
        _events_table(page.events)
        if page.next_after is not None:
            say(f"\nmore: --after {page.next_after}")
        return 0

    @memswarm_command(group, "as-of", "the memory as it stood at a position or a time")
    @click.option("--position", type=POSITION, default=None)
    @click.option("--time", "moment", type=TIME, default=None,
                  help="ISO time (UTC if no offset)")
    @scope_options
    @click.option("--snapshot-every", type=click.IntRange(min=1), default=10_000,
                  show_default=True, help="events between two saved snapshots")
    @store_options()
    def as_of(position: int | None, moment: datetime | None, agent_id: str | None,
              group_id: str | None, context_id: str | None, snapshot_every: int,
              as_json: bool, **options: Any) -> int:
        if (position is None) == (moment is None):
            raise click.UsageError("give one of --position and --time")
        with memory_of(settings_of(options), snapshot_every=snapshot_every) as memory, \
                progress_bar("folding") as progress:
            past = memory.as_of(position, time=moment, progress=progress)
            entries = past.read_scope(agent_id, group_id, context_id)
        if as_json:
            emit_json({"position": past.position, "recorded_at": past.recorded_at,
                       "memories": [e.as_dict() for e in entries]})
            return 0
        when = past.recorded_at.isoformat() if past.recorded_at else "the beginning"
        say(f"the memory at position {past.position} ({when}): {len(entries)} memories\n")
        show_table(["position", "memory", "version", "agent/group/context", "value"],
                   [[e.position, e.memory_id, e.version,
                     scope_cell(e.agent_id, e.group_id, e.context_id), e.value]
                    for e in entries])
        return 0

    @memswarm_command(group, "verify",
                      "walk the hash chain; optionally check an earlier digest")
    @click.option("--digest", "kept", type=DIGEST, default=None,
                  help="POSITION:HEXHASH printed by an earlier verify")
    @store_options("log")
    def verify(kept: Digest | None, as_json: bool, **options: Any) -> int:
        with operator_memory(settings_of(options)) as memory, \
                progress_bar("verifying") as progress:
            checked = memory.verify(progress)
            digest = memory.digest()
            extends = memory.extends(kept) if kept is not None and checked.ok else None
        ok = checked.ok and extends is not False
        if as_json:
            emit_json({**dataclasses.asdict(checked), "ok": ok,
                       "digest": f"{digest.position}:{digest.hash.hex()}", "extends": extends})
            return 0 if ok else 1
        if not checked.ok:
            say(f"FAILED at position {checked.position}: {checked.reason} "
                f"({checked.checked} events verified before it)")
            return 1
        say(f"ok: {checked.checked} events verified; digest {digest.position}:"
            f"{digest.hash.hex()}")
        if kept is not None and not extends:
            say(f"FAILED: the log no longer extends the digest {kept.position}:"
                f"{kept.hash.hex()}")
            return 1
        if kept is not None:
            say(f"ok: the log extends the digest at position {kept.position}")
        return 0

    @memswarm_command(group, "forget", "erase every version of a memory, keeping the chain")
    @click.argument("memory_id")
    @click.option("--reason", required=True, help="why (kept in the log)")
    @click.option("--actor", default="cli", show_default=True,
                  help="who asked, on the operator's word (not with --agent)")
    @store_options()
    def forget(memory_id: str, reason: str, actor: str, as_json: bool,
               **options: Any) -> int:
        settings = settings_of(options)
        agent = settings.get("agent")
        with operator_memory(settings) as memory:
            position = (memory.agent(agent).forget(memory_id, reason) if agent
                        else memory.forget(memory_id, reason, actor=actor))
            recorded = from_micros(memory.log.read(position - 1, 1)[0].recorded_at_us)
        result(as_json, {"memory_id": memory_id, "position": position, "recorded_at": recorded},
               f"forgot {memory_id} at position {position} ({recorded.isoformat()}); read "
               "models drop it when they project that event")
        return 0
