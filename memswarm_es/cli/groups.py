"""``memswarm join | leave | members``: the operator managing groups from the shell.

Memberships are events on the log like every other change: ``join`` and ``leave`` append one
(the actor is ``operator`` unless ``--actor`` says), and ``members`` folds the log (up to a
position, if given) to say who belonged to a group then.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..events import membership_event
from ..log.base import EventLog
from ..principals import OPERATOR
from ..timetravel import TimeMachine
from .args import command, log_argument
from .history import on_log
from .output import say, table
from .stores import snapshot_store_for

if TYPE_CHECKING:
    from .args import Commands


def _join(args: argparse.Namespace, log: EventLog) -> int:
    (event,) = log.append([membership_event(args.agent_id, args.group_id, args.admin,
                                            args.actor)])
    say(f"{args.agent_id} joined {args.group_id}{' as an admin' if args.admin else ''} "
        f"at position {event.position}")
    return 0


def _leave(args: argparse.Namespace, log: EventLog) -> int:
    (event,) = log.append([membership_event(args.agent_id, args.group_id, None, args.actor)])
    say(f"{args.agent_id} left {args.group_id} at position {event.position}")
    return 0


def _members(args: argparse.Namespace, log: EventLog) -> int:
    machine = TimeMachine(log, snapshot_store_for(log))
    position = log.head() if args.position is None else min(args.position, log.head())
    members = machine.view_at(position).members.get(args.group_id, {})
    say(f"members of {args.group_id} at position {position}: {len(members)}\n")
    say(table(["agent", "admin"], [[agent, "yes" if admin else "no"]
                                   for agent, admin in sorted(members.items())]))
    return 0


def add_commands(commands: Commands) -> None:
    """Register the group commands on the ``memswarm`` parser."""
    for name, handler, help_text in (
            ("join", _join, "make an agent a member (or an admin) of a group"),
            ("leave", _leave, "take an agent out of a group")):
        p = command(commands, name, on_log(handler), help_text)
        log_argument(p)
        p.add_argument("agent_id")
        p.add_argument("group_id")
        p.add_argument("--actor", default=OPERATOR, help="who does it (default: %(default)s)")
        if name == "join":
            p.add_argument("--admin", action="store_true", help="an admin of the group")
        else:
            p.set_defaults(admin=None)
    p = command(commands, "members", on_log(_members), "who belongs to a group (or did then)")
    log_argument(p)
    p.add_argument("group_id")
    p.add_argument("--position", type=int, help="as the log stood at this position")
