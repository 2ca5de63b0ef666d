"""Read-only content: what a read model can hand to every reader without copying it.

:class:`FrozenDict` and :class:`FrozenList` are ``dict`` and ``list`` (they compare, iterate,
encode to msgpack and JSON like them) whose changing methods raise ``TypeError``. A model that
keeps its entries frozen returns the same objects to every reader: no reader can change what
another reads.
"""

from __future__ import annotations

from typing import Any, NoReturn

from .fold import MemoryEntry, with_content


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"a memory's content is read-only ({type(self).__name__}); copy it "
                    "(dict(...), list(...)) to change it")


class FrozenDict(dict[str, Any]):
    """A ``dict`` that cannot be changed (built by :func:`freeze`; even ``__init__`` refuses,
    as it would fill an existing one)."""

    __slots__ = ()
    __init__ = __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        return _frozen_dict, (dict(self),)  # copy and pickle build it whole, not item by item

    def __hash__(self) -> int:  # type: ignore[override]
        raise TypeError("unhashable type: 'FrozenDict'")


class FrozenList(list[Any]):
    """A ``list`` that cannot be changed (built by :func:`freeze`; ``__init__`` refuses)."""

    __slots__ = ()
    __init__ = __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse

    def __reduce__(self) -> tuple[Any, tuple[list[Any]]]:
        return _frozen_list, (list(self),)

    def __hash__(self) -> int:  # type: ignore[override]
        raise TypeError("unhashable type: 'FrozenList'")


def _frozen_dict(items: dict[str, Any]) -> FrozenDict:
    made = dict.__new__(FrozenDict)
    dict.__init__(made, items)
    return made


def _frozen_list(items: list[Any]) -> FrozenList:
    made = list.__new__(FrozenList)
    list.__init__(made, items)
    return made


def freeze(obj: Any) -> Any:
    """``obj`` with every dict and list in it (at any depth) made read-only; other values, and
    containers already frozen, as they are. Recursion is bounded: content is checked at the
    door to be at most :data:`memswarm_es.events.MAX_DEPTH` deep."""
    kind = type(obj)
    if kind is dict or (kind is not FrozenDict and isinstance(obj, dict)):
        return _frozen_dict({k: freeze(v) for k, v in obj.items()})
    if kind is list or kind is tuple or (kind is not FrozenList and isinstance(obj, list)):
        return _frozen_list([freeze(v) for v in obj])
    return obj


def is_frozen(entry: MemoryEntry) -> bool:
    """True if neither the value nor the metadata of ``entry`` can be changed by a reader."""
    value = entry.value
    return type(entry.metadata) is FrozenDict and (
        type(value) in _FROZEN or not isinstance(value, (dict, list)))


_FROZEN = (FrozenDict, FrozenList)


def frozen(entry: MemoryEntry) -> MemoryEntry:
    """``entry`` holding read-only content (itself if it already does)."""
    if is_frozen(entry):
        return entry
    return with_content(entry, freeze(entry.value), freeze(entry.metadata))
