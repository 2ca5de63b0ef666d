"""``memswarm history | audit | as-of | verify | forget``: the log as the system of record.

These commands read the log directly (no read model is built), print plain tables, and draw a
progress bar on stderr during long walks.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from .audit import audit, history
from .errors import MemSwarmError
from .events import Event, from_micros
from .forget import forget
from .log.base import Digest
from .log.sql import SQLEventLog
from .scopes import Scope
from .snapshots import snapshot_store_for
from .timetravel import TimeMachine, verify_log

WIDTH = 48  # characters of a value shown in a table cell


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, a rule under the headers."""
    cells = [[str(c) for c in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    text = "-" if value is None else _CONTROL.sub(_escaped, str(value))
    return text if len(text) <= WIDTH else text[:WIDTH - 1] + "…"


# Control characters (and lone surrogates) in a cell would forge lines or break the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def progress_bar(label: str, stream: Any = None) -> Callable[[int, int], None]:
    """A progress callback drawing ``label [#####.....] 50% 5/10`` on stderr."""
    out = stream or sys.stderr

    def draw(done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = int(30 * share)
        out.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {share:4.0%} {done}/{total}")
        if done >= total:
            out.write("\n")
        out.flush()

    return draw


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


def _scope(args: argparse.Namespace) -> Scope:
    return Scope(args.agent_id, args.group_id, args.context_id)


def _event_rows(events: Sequence[Event]) -> list[list[Any]]:
    return [[e.position, e.recorded_at, e.type, e.actor,
             "/".join(p or "-" for p in (e.scope.agent_id, e.scope.group_id, e.scope.context_id)),
             e.memory_id, e.version, _payload(e)]
            for e in events]


def _payload(event: Event) -> Any:
    data, damaged = event.content()
    if damaged:
        return f"(damaged: {damaged})"
    return "(redacted)" if data is None else data


def _history(args: argparse.Namespace, log: SQLEventLog) -> int:
    rows = [[v.version, v.type, v.actor, v.recorded_at, v.position,
             "(redacted)" if v.redacted else f"(damaged: {v.damaged})" if v.damaged
             else (v.reason if v.reason else v.value)]
            for v in history(log, args.memory_id)]
    print(table(["version", "event", "actor", "recorded at", "position", "value / reason"],
                rows))
    return 0


def _audit(args: argparse.Namespace, log: SQLEventLog) -> int:
    page = audit(log, actor=args.actor, scope=_scope(args), since=args.since,
                 until=args.until, after=args.after, limit=args.limit)
    print(table(["position", "recorded at", "event", "actor", "agent/group/context", "memory",
                 "version", "payload"], _event_rows(page.events)))
    if page.next_after is not None:
        print(f"\nmore: --after {page.next_after}")
    return 0


def _as_of(args: argparse.Namespace, log: SQLEventLog) -> int:
    machine = TimeMachine(log, snapshot_store_for(log), args.snapshot_every)
    past = machine.at(args.position, args.time, progress_bar("folding"))
    entries = past.read_scope(args.agent_id, args.group_id, args.context_id)
    when = past.recorded_at.isoformat() if past.recorded_at else "the beginning"
    print(f"the memory at position {past.position} ({when}): {len(entries)} memories\n")
    print(table(["position", "memory", "version", "agent/group/context", "value"],
                [[e.position, e.memory_id, e.version,
                  "/".join(p or "-" for p in (e.agent_id, e.group_id, e.context_id)), e.value]
                 for e in entries]))
    return 0


def _verify(args: argparse.Namespace, log: SQLEventLog) -> int:
    machine = TimeMachine(log, snapshot_store_for(log))
    result = verify_log(log, machine, progress_bar("verifying"))
    digest = log.digest()
    if not result.ok:
        print(f"FAILED at position {result.position}: {result.reason} "
              f"({result.checked} events verified before it)")
        return 1
    print(f"ok: {result.checked} events verified; digest {digest.position}:{digest.hash.hex()}")
    if args.digest:
        kept = args.digest
        if not log.extends(kept):
            print(f"FAILED: the log no longer extends the digest {kept.position}:"
                  f"{kept.hash.hex()}")
            return 1
        print(f"ok: the log extends the digest at position {kept.position}")
    return 0


def _forget(args: argparse.Namespace, log: SQLEventLog) -> int:
    machine = TimeMachine(log, snapshot_store_for(log))
    position = forget(log, machine, args.memory_id, args.reason, actor=args.actor)
    print(f"forgot {args.memory_id} at position {position} "
          f"({from_micros(log.read(position - 1, 1)[0].recorded_at_us).isoformat()}); "
          "read models drop it when they project that event")
    return 0


def add_commands(sub: Any) -> None:
    """Register the audit commands on the ``memswarm`` parser's subparsers."""

    def command(name: str, handler: Callable[[argparse.Namespace, SQLEventLog], int],
                help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--log", default="sqlite:///memswarm.db",
                       help="the event log: sqlite:///path.db or any SQLAlchemy URL "
                            "(default: %(default)s)")
        p.set_defaults(func=lambda args: _run(handler, args))
        return p

    def scopes(p: argparse.ArgumentParser) -> None:
        p.add_argument("--agent-id")
        p.add_argument("--group-id")
        p.add_argument("--context-id")

    p = command("history", _history, "every version of one memory")
    p.add_argument("memory_id")
    p = command("audit", _audit, "who wrote what, when: events matching filters, paged")
    scopes(p)
    p.add_argument("--actor")
    p.add_argument("--since", type=_time, help="ISO time, inclusive (UTC if no offset)")
    p.add_argument("--until", type=_time, help="ISO time, exclusive")
    p.add_argument("--after", type=int, default=0, help="position to page after")
    p.add_argument("--limit", type=int, default=50)
    p = command("as-of", _as_of, "the memory as it stood at a position or a time")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--position", type=int)
    when.add_argument("--time", type=_time, help="ISO time (UTC if no offset)")
    scopes(p)
    p.add_argument("--snapshot-every", type=int, default=10_000)
    p = command("verify", _verify, "walk the hash chain; optionally check an earlier digest")
    p.add_argument("--digest", type=_digest,
                   help="POSITION:HEXHASH printed by an earlier verify")
    p = command("forget", _forget, "erase every version of a memory, keeping the chain")
    p.add_argument("memory_id")
    p.add_argument("--reason", required=True)
    p.add_argument("--actor", default="cli")


def _run(handler: Callable[[argparse.Namespace, SQLEventLog], int],
         args: argparse.Namespace) -> int:
    try:
        log = SQLEventLog(args.log, create=False)  # a typo must not make an empty log
    except MemSwarmError as exc:
        print(f"memswarm: {exc}", file=sys.stderr)
        return 2
    try:
        return handler(args, log)
    except MemSwarmError as exc:
        print(f"memswarm: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        log.close()
