"""Keys and namespaces: the address a caller may give a memory, as values with their checks.

A namespace is a tuple of labels (``("users", "alice", "prefs")``), ``()`` by default; a label
is a usable id (see :func:`~memswarm_es.scopes.check_id`) without ``.``, as in LangGraph's
stores. A key is a usable id. Stored, a namespace is its labels joined by ``.``
(:func:`namespace_text`): unambiguous, since no label holds a ``.``, and ordered so that every
namespace under a prefix lies between ``prefix.`` and ``prefix/`` (``/`` follows ``.``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence

from .errors import InvalidIdError, InvalidInputError
from .scopes import check_id

Namespace = tuple[str, ...]
SEPARATOR = "."
WILDCARD = "*"
MAX_DEPTH = 32  # labels in a namespace

#: Where the ids of keyed memories come from (see :func:`keyed_memory_id`).
_KEYED_IDS = uuid.UUID("0d8f4a8e-2b61-4c1e-9e57-6a3b8f1c2d90")


def check_namespace(value: object, name: str = "namespace") -> Namespace:
    """``value`` (a tuple or list of labels) as a namespace, or :class:`InvalidIdError`.
    Tuples found good are remembered (a bounded set): reads name the same ones again."""
    if type(value) is tuple:
        try:
            if value in _GOOD:
                return value
        except TypeError:  # an unhashable label: the check below says what is wrong
            pass
    found = _checked_namespace(value, name)
    if type(value) is tuple and len(_GOOD) < _GOOD_MAX:
        _GOOD.add(found)
    return found


_GOOD: set[Namespace] = set()
_GOOD_MAX = 4096


def _checked_namespace(value: object, name: str) -> Namespace:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidIdError(f"{name} must be a tuple of labels, not {type(value).__name__}")
    if len(value) > MAX_DEPTH:
        raise InvalidIdError(f"{name} has more than {MAX_DEPTH} labels")
    for label in value:
        check_id(label, f"a label of {name}")
        if SEPARATOR in label:
            raise InvalidIdError(f"a label of {name} holds {SEPARATOR!r}: {label!r}")
    return tuple(value)


def check_key(value: object) -> str:
    """``value`` as a key (a usable id), or :class:`InvalidIdError`."""
    return check_id(value, "key")


def check_pattern(value: object, name: str) -> Namespace:
    """A prefix or suffix to match namespaces with: labels, any of which may be ``*``."""
    return check_namespace(value, name)


def stored_namespace(value: object) -> Namespace:
    """The namespace a recorded payload holds, ``()`` for anything that is not one: a fold
    must read any event, so this never raises."""
    try:
        return check_namespace(value) if isinstance(value, (list, tuple)) else ()
    except InvalidInputError:
        return ()


def stored_key(value: object) -> str | None:
    """The key a recorded payload holds, ``None`` for anything that is not one."""
    try:
        return check_key(value) if value is not None else None
    except InvalidInputError:
        return None


def namespace_text(namespace: Namespace) -> str:
    """``namespace`` as stored: its labels joined by ``.`` (``""`` for ``()``)."""
    return SEPARATOR.join(namespace)


def namespace_from_text(text: str) -> Namespace:
    """Inverse of :func:`namespace_text`."""
    return tuple(text.split(SEPARATOR)) if text else ()


def text_range(prefix: Namespace) -> tuple[str, str]:
    """The stored namespaces strictly under ``prefix`` lie in ``[low, high)``."""
    text = namespace_text(prefix)
    return (text + SEPARATOR, text + "/") if prefix else ("", "\U0010ffff")


def under(namespace: Namespace, prefix: Namespace) -> bool:
    """True if ``namespace`` is ``prefix`` or lies below it."""
    return namespace[:len(prefix)] == prefix


def matches(namespace: Namespace, prefix: Namespace | None, suffix: Namespace | None) -> bool:
    """True if ``namespace`` starts with ``prefix`` and ends with ``suffix`` (``*`` matching
    any one label), as LangGraph's ``MatchCondition`` does."""
    return _starts(namespace, prefix) and _starts(namespace[::-1],
                                                  None if suffix is None else suffix[::-1])


def _starts(labels: Namespace, pattern: Namespace | None) -> bool:
    if pattern is None:
        return True
    return len(labels) >= len(pattern) and all(
        p in (WILDCARD, label) for p, label in zip(pattern, labels, strict=False))


@functools.lru_cache(maxsize=65536)
def keyed_memory_id(namespace: Namespace, key: str, incarnation: int) -> str:
    """The id of the ``incarnation``-th memory (1, 2, ...) written under ``key`` in
    ``namespace``: derived, so that two writers creating the same key race for one id (the
    log takes one version 1 of it) instead of making two memories. Cached: a put asks for
    the same ids a few times."""
    name = "\x00".join([*namespace, "", key, str(incarnation)])
    return str(uuid.uuid5(_KEYED_IDS, name))
