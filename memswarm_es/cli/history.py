"""``memswarm history | audit | as-of | verify | forget``: the log as the system of record.

These commands read the log directly (no read model is built), never create one, print plain
tables, and draw a progress bar on stderr during long walks.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..audit import audit, history
from ..events import Event, from_micros
from ..forget import forget
from ..log.base import Digest, EventLog
from ..scopes import Scope
from ..timetravel import TimeMachine, verify_log
from .args import Handler, command, log_argument, scope_arguments
from .output import progress_bar, say, scope_cell, table
from .stores import open_log, snapshot_store_for

if TYPE_CHECKING:
    from .args import Commands

Reader = Callable[[argparse.Namespace, EventLog], int]


def _time(text: str) -> datetime:
    """An ISO time (UTC if it has no offset); a usage error otherwise."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time such as 2026-11-25T10:30 or 2026-11-25T10:30+01:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _digest(text: str) -> Digest:
    """``POSITION:HEXHASH`` as printed by verify; a usage error otherwise."""
    position, _, hex_hash = text.partition(":")
    try:
        digest = Digest(int(position), bytes.fromhex(hex_hash))
    except ValueError:
        digest = None
    if digest is None or digest.position < 0 or len(digest.hash) != 32:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a digest: POSITION:HEXHASH (64 hex digits), as verify prints it")
    return digest


def _event_rows(events: Sequence[Event]) -> list[list[object]]:
    return [[e.position, e.recorded_at, e.type, e.actor,
             scope_cell(e.scope.agent_id, e.scope.group_id, e.scope.context_id),
             e.memory_id, e.version, _payload(e)]
            for e in events]


def _payload(event: Event) -> object:
    data, damaged = event.content()
    if damaged:
        return f"(damaged: {damaged})"
    return "(redacted)" if data is None else data


def _history(args: argparse.Namespace, log: EventLog) -> int:
    rows = [[v.version, v.type, v.actor, v.recorded_at, v.position,
             "(redacted)" if v.redacted else f"(damaged: {v.damaged})" if v.damaged
             else (v.reason if v.reason else v.value)]
            for v in history(log, args.memory_id)]
    say(table(["version", "event", "actor", "recorded at", "position", "value / reason"], rows))
    return 0


def _audit(args: argparse.Namespace, log: EventLog) -> int:
    page = audit(log, actor=args.actor,
                 scope=Scope(args.agent_id, args.group_id, args.context_id),
                 since=args.since, until=args.until, after=args.after, limit=args.limit)
    say(table(["position", "recorded at", "event", "actor", "agent/group/context", "memory",
               "version", "payload"], _event_rows(page.events)))
    if page.next_after is not None:
        say(f"\nmore: --after {page.next_after}")
    return 0


def _as_of(args: argparse.Namespace, log: EventLog) -> int:
    machine = TimeMachine(log, snapshot_store_for(log), args.snapshot_every)
    past = machine.at(args.position, args.time, progress_bar("folding"))
    entries = past.read_scope(args.agent_id, args.group_id, args.context_id)
    when = past.recorded_at.isoformat() if past.recorded_at else "the beginning"
    say(f"the memory at position {past.position} ({when}): {len(entries)} memories\n")
    say(table(["position", "memory", "version", "agent/group/context", "value"],
              [[e.position, e.memory_id, e.version,
                scope_cell(e.agent_id, e.group_id, e.context_id), e.value] for e in entries]))
    return 0


def _verify(args: argparse.Namespace, log: EventLog) -> int:
    machine = TimeMachine(log, snapshot_store_for(log))
    result = verify_log(log, machine, progress_bar("verifying"))
    digest = log.digest()
    if not result.ok:
        say(f"FAILED at position {result.position}: {result.reason} "
            f"({result.checked} events verified before it)")
        return 1
    say(f"ok: {result.checked} events verified; digest {digest.position}:{digest.hash.hex()}")
    if args.digest:
        kept = args.digest
        if not log.extends(kept):
            say(f"FAILED: the log no longer extends the digest {kept.position}:"
                f"{kept.hash.hex()}")
            return 1
        say(f"ok: the log extends the digest at position {kept.position}")
    return 0


def _forget(args: argparse.Namespace, log: EventLog) -> int:
    machine = TimeMachine(log, snapshot_store_for(log))
    position = forget(log, machine, args.memory_id, args.reason, actor=args.actor)
    say(f"forgot {args.memory_id} at position {position} "
        f"({from_micros(log.read(position - 1, 1)[0].recorded_at_us).isoformat()}); "
        "read models drop it when they project that event")
    return 0


def on_log(reader: Reader) -> Handler:
    """``reader`` run on the log of ``--log``, opened only if it exists, closed after."""

    def run(args: argparse.Namespace) -> int:
        log = open_log(args.log, create=False)  # a typo must not make an empty log
        try:
            return reader(args, log)
        finally:
            log.close()

    return run


def add_commands(commands: Commands) -> None:
    """Register the history commands on the ``memswarm`` parser."""

    def reading(name: str, reader: Reader, help_text: str) -> argparse.ArgumentParser:
        parser = command(commands, name, on_log(reader), help_text)
        log_argument(parser)
        return parser

    p = reading("history", _history, "every version of one memory")
    p.add_argument("memory_id")
    p = reading("audit", _audit, "who wrote what, when: events matching filters, paged")
    scope_arguments(p)
    p.add_argument("--actor")
    p.add_argument("--since", type=_time, help="ISO time, inclusive (UTC if no offset)")
    p.add_argument("--until", type=_time, help="ISO time, exclusive")
    p.add_argument("--after", type=int, default=0, help="position to page after")
    p.add_argument("--limit", type=int, default=50)
    p = reading("as-of", _as_of, "the memory as it stood at a position or a time")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--position", type=int)
    when.add_argument("--time", type=_time, help="ISO time (UTC if no offset)")
    scope_arguments(p)
    p.add_argument("--snapshot-every", type=int, default=10_000)
    p = reading("verify", _verify, "walk the hash chain; optionally check an earlier digest")
    p.add_argument("--digest", type=_digest,
                   help="POSITION:HEXHASH printed by an earlier verify")
    p = reading("forget", _forget, "erase every version of a memory, keeping the chain")
    p.add_argument("memory_id")
    p.add_argument("--reason", required=True)
    p.add_argument("--actor", default="cli")
