"""Scopes: who a memory belongs to, as a small immutable value.

A scope is the triple ``(agent_id, group_id, context_id)``; any part may be ``None``. Storage keys
are built from it by :func:`scope_key`, which escapes every part, so ids such as ``a:b`` and
``a`` + ``b`` never meet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidIdError, InvalidScopeError

SCOPE_NAMES = ("agent_id", "group_id", "context_id")
MAX_ID_LENGTH = 512


# What no id may hold: control characters (NUL, newlines, tabs, DEL, C1), which some stores
# cannot carry and which would forge lines in audit output, and lone surrogates, which are not
# text (they cannot be encoded as UTF-8, so no store can carry them).
_UNUSABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def check_id(value: object, name: str) -> str:
    """Return ``value`` if it is a usable id, else raise :class:`InvalidIdError`.

    An id is non-empty text of at most :data:`MAX_ID_LENGTH` characters, valid as UTF-8, with
    no control characters. Ids found usable are remembered (a bounded set), so that the ones
    every write names again (agents, groups, contexts, actors) are checked once.
    """
    if type(value) is str and value in _USABLE:
        return value
    if not isinstance(value, str):
        raise InvalidIdError(f"{name} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidIdError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    bad = _UNUSABLE.search(value)
    if bad:
        raise InvalidIdError(
            f"{name} holds {bad.group()!r} at {bad.start()}: ids are UTF-8 text without "
            "control characters")
    if type(value) is str:
        if len(_USABLE) >= _USABLE_KEPT:
            _USABLE.clear()
        _USABLE.add(value)
    return value


_USABLE: set[str] = set()
_USABLE_KEPT = 65536


def _optional_id(value: object, name: str) -> str | None:
    return None if value is None else check_id(value, name)


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a memory lives. Also used as a query: ``None`` parts match anything."""

    agent_id: str | None = None
    group_id: str | None = None
    context_id: str | None = None

    def __post_init__(self) -> None:
        for name in SCOPE_NAMES:
            _optional_id(getattr(self, name), name)

    @classmethod
    def stored(cls, agent_id: Any, group_id: Any, context_id: Any) -> Scope:
        """A scope read back from storage, not checked again: a log must be readable even if
        a row was damaged (its hash then names it)."""
        scope = _new_object(cls)
        _set_agent(scope, agent_id)
        _set_group(scope, group_id)
        _set_context(scope, context_id)
        return scope

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> Scope:
        """Build a scope from keyword arguments, refusing names that are not scopes."""
        unknown = sorted(set(kwargs) - set(SCOPE_NAMES))
        if unknown:
            raise InvalidScopeError(
                f"unknown scope name(s) {unknown}; scopes are {list(SCOPE_NAMES)}"
            )
        return cls(**kwargs)

    @classmethod
    def from_query(cls, agent_id: str | None, group_id: str | None, context_id: str | None,
                   unknown: Mapping[str, Any]) -> Scope:
        """The scope a query names: its three parts, refusing any other keyword (``unknown``,
        a query's leftover keyword arguments) by name."""
        if unknown:
            cls.from_kwargs(unknown)  # raises InvalidScopeError naming them
        return cls(agent_id, group_id, context_id)

    def parts(self) -> tuple[tuple[str, str], ...]:
        """The (name, id) pairs that are set, in a fixed order."""
        return tuple((n, v) for n in SCOPE_NAMES if (v := getattr(self, n)) is not None)

    def matches(self, other: Scope) -> bool:
        """True if ``other`` (a memory's scope) lies inside this query scope."""
        return all(getattr(other, n) == v for n, v in self.parts())

    def is_empty(self) -> bool:
        return not self.parts()


# Setting the slots through their descriptors: a stored scope is built once per event read, and
# a frozen dataclass's ``__setattr__`` refuses (object.__setattr__ costs three times as much).
_new_object = object.__new__
_set_agent = Scope.__dict__["agent_id"].__set__
_set_group = Scope.__dict__["group_id"].__set__
_set_context = Scope.__dict__["context_id"].__set__


def stored_scope(agent_id: Any, group_id: Any, context_id: Any) -> Scope:
    """:meth:`Scope.stored`, without the class method's call (for the loops that read logs)."""
    scope = _new_object(Scope)
    _set_agent(scope, agent_id)
    _set_group(scope, group_id)
    _set_context(scope, context_id)
    return scope


def escape_part(part: str) -> str:
    """Escape one id for use inside a ``:``-separated key: ``%`` and ``:`` are percent-encoded."""
    return part.replace("%", "%25").replace(":", "%3A")


def scope_key(name: str, value: str) -> str:
    """The key of one scope index, e.g. ``agent:alice``; the id is escaped, never joined raw."""
    if name not in SCOPE_NAMES:
        raise InvalidScopeError(f"unknown scope name {name!r}")
    return f"{name.removesuffix('_id')}:{escape_part(value)}"

