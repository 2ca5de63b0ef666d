"""Principals: who a permission names, as text that can never be read two ways.

A principal is ``"agent:<id>"`` (one agent), ``"group:<id>"`` (every current member of a
group) or ``"*"`` (every agent). The kind comes first and ends at the first ``:``, so an agent
id can never be mistaken for a group id, whatever characters the id holds. The operator (the
unbound facade) is no principal: it may do anything.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import InvalidIdError, InvalidValueError
from .scopes import check_id

EVERYONE = "*"
AGENT = "agent:"
GROUP = "group:"
#: The actor recorded for what the operator (the unbound facade) does when no ``actor=`` says.
OPERATOR = "operator"
#: The payload fields (and metadata keys) that carry a memory's permissions.
PERMISSION_FIELDS = ("readable_by", "writable_by")


def agent(agent_id: str) -> str:
    """The principal of one agent."""
    return AGENT + agent_id


def group(group_id: str) -> str:
    """The principal of every current member of a group."""
    return GROUP + group_id


def check_principal(value: object) -> str:
    """``value`` if it is a principal, else :class:`InvalidValueError` saying why."""
    if value == EVERYONE:
        return EVERYONE
    if isinstance(value, str):
        for kind in (AGENT, GROUP):
            if value.startswith(kind):
                try:
                    check_id(value[len(kind):], f"the id in principal {value[:40]!r}")
                except InvalidIdError as exc:
                    raise InvalidValueError(str(exc)) from exc
                return value
    raise InvalidValueError(
        f"{value!r:.60} is not a principal: use 'agent:<id>', 'group:<id>' or '*'")


def check_principals(value: object, name: str) -> tuple[str, ...]:
    """A list of principals given by a caller, checked, without repeats, in a fixed order.

    A bare string is refused (iterating it would name one principal per character)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidValueError(f"{name} must be a list of principals, not {type(value).__name__}")
    return tuple(sorted({check_principal(p) for p in value}))


def stored_principals(value: object) -> tuple[str, ...] | None:
    """Principals read back from a payload, or ``None`` if they are not a list of principals
    (written by another program, or damaged): whoever reads them then fails closed."""
    if not isinstance(value, (list, tuple)):
        return None
    try:
        return tuple(sorted({check_principal(p) for p in value}))
    except (InvalidValueError, TypeError):
        return None


def default_readers(agent_id: str | None, group_id: str | None) -> tuple[str, ...]:
    """Who may read a memory whose permissions were never set: its agent and the current
    members of its group."""
    found = []
    if agent_id is not None:
        found.append(agent(agent_id))
    if group_id is not None:
        found.append(group(group_id))
    return tuple(sorted(found))


def default_writers(agent_id: str | None) -> tuple[str, ...]:
    """Who may change a memory whose permissions were never set: its agent (none: only the
    operator)."""
    return () if agent_id is None else (agent(agent_id),)


def principals_of(agent_id: str, groups: Iterable[str]) -> frozenset[str]:
    """Every principal that names ``agent_id``, a member of ``groups``."""
    return frozenset((EVERYONE, agent(agent_id), *(group(g) for g in groups)))


def allows(allowed: Iterable[str], principals: frozenset[str]) -> bool:
    """True if any of ``allowed`` names one of ``principals``."""
    return not principals.isdisjoint(allowed)
