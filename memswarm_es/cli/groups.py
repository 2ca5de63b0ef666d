"""``memswarm join | leave | members``: groups managed from the shell.

Memberships are events on the log like every other change. As the operator, ``join`` and
``leave`` append one whose actor is ``operator`` unless ``--actor`` names someone on the
operator's word; with ``--agent`` the agent does it, and must be allowed to (an admin of the
group, or an agent leaving). ``members`` says who belongs to a group now, or at a position.
"""

from __future__ import annotations

from typing import Any

import click

from ..events import membership_event
from ..principals import OPERATOR
from .options import POSITION, memswarm_command, settings_of, store_options
from .output import emit_json, result, say, show_table
from .stores import memory_of, operator_memory


def _change(agent_id: str, group_id: str, admin: bool | None, actor: str,
            options: dict[str, Any]) -> int:
    """The position of the membership event appended (``admin`` None: a leave)."""
    settings = settings_of(options)
    by = settings.get("agent")
    with operator_memory(settings, create=True) as memory:
        if by:
            return (memory.agent(by).leave_group(agent_id, group_id) if admin is None
                    else memory.agent(by).join_group(agent_id, group_id, admin))
        (event,) = memory.log.append([membership_event(agent_id, group_id, admin, actor)])
        return event.position


def add_commands(group: click.Group) -> None:
    """Register the group commands on ``group``."""
    actor_option = click.option(
        "--actor", default=OPERATOR, show_default=True,
        help="who does it, on the operator's word (with --agent, the agent does it)")

    @memswarm_command(group, "join", "make an agent a member (or an admin) of a group")
    @click.argument("agent_id")
    @click.argument("group_id")
    @click.option("--admin", is_flag=True, help="an admin of the group")
    @actor_option
    @store_options()
    def join(agent_id: str, group_id: str, admin: bool, actor: str, as_json: bool,
             **options: Any) -> int:
        position = _change(agent_id, group_id, admin, actor, options)
        result(as_json, {"agent_id": agent_id, "group_id": group_id, "admin": admin,
                         "position": position},
               f"{agent_id} joined {group_id}{' as an admin' if admin else ''} at position "
               f"{position}")
        return 0

    @memswarm_command(group, "leave", "take an agent out of a group")
    @click.argument("agent_id")
    @click.argument("group_id")
    @actor_option
    @store_options()
    def leave(agent_id: str, group_id: str, actor: str, as_json: bool, **options: Any) -> int:
        position = _change(agent_id, group_id, None, actor, options)
        result(as_json, {"agent_id": agent_id, "group_id": group_id, "position": position},
               f"{agent_id} left {group_id} at position {position}")
        return 0

    @memswarm_command(group, "members", "who belongs to a group (or did then)")
    @click.argument("group_id")
    @click.option("--position", type=POSITION, default=None,
                  help="as the log stood at this position")
    @store_options()
    def members(group_id: str, position: int | None, as_json: bool, **options: Any) -> int:
        with memory_of(settings_of(options)) as memory:
            head = memory.sync()
            at = head if position is None else min(position, head)
            found = memory.as_of(at).members(group_id)
        if as_json:
            emit_json({"group_id": group_id, "position": at, "members": found})
            return 0
        say(f"members of {group_id} at position {at}: {len(found)}\n")
        show_table(["agent", "admin"], [[agent, "yes" if admin else "no"]
                                        for agent, admin in sorted(found.items())])
        return 0
