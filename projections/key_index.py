"""The in-memory indexes of keys and namespaces: which live memories hold a key, which lie in
a namespace, and which namespaces lie under a prefix."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import TypeVar

from memswarm_es.namespaces import Namespace

from .fold import MemoryEntry

_K = TypeVar("_K")
_V = TypeVar("_V")


class KeyIndex:
    """Memory ids by (namespace, key) and by namespace, each in position order (memories are
    indexed in log order when written), and for every prefix of a namespace present the
    namespaces under it: a read costs what its answer costs."""

    def __init__(self) -> None:
        self._keys: dict[tuple[Namespace, str], dict[str, None]] = {}
        self._spaces: dict[Namespace, dict[str, None]] = {}
        self._under: dict[Namespace, dict[Namespace, None]] = {}

    def add(self, entry: MemoryEntry) -> None:
        if entry.key is not None:
            self._keys.setdefault((entry.namespace, entry.key), {})[entry.memory_id] = None
        ids = self._spaces.get(entry.namespace)
        if ids is None:
            ids = self._spaces[entry.namespace] = {}
            for depth in range(len(entry.namespace) + 1):
                self._under.setdefault(entry.namespace[:depth], {})[entry.namespace] = None
        ids[entry.memory_id] = None

    def remove(self, entry: MemoryEntry) -> None:
        if entry.key is not None:
            _discard(self._keys, (entry.namespace, entry.key), entry.memory_id)
        if _discard(self._spaces, entry.namespace, entry.memory_id):
            for depth in range(len(entry.namespace) + 1):
                _discard(self._under, entry.namespace[:depth], entry.namespace)

    def holders(self, namespace: Namespace, key: str) -> Iterator[str]:
        """The ids of the live memories written with ``key`` in ``namespace``, first first."""
        return iter(self._keys.get((namespace, key), ()))

    def spaces(self, prefix: Namespace) -> list[Namespace]:
        """The namespaces at or under ``prefix`` that hold live memories."""
        return list(self._under.get(prefix, ()))

    def ids(self, namespace: Namespace) -> dict[str, None]:
        return self._spaces.get(namespace, {})

    def ids_under(self, prefix: Namespace, position: Callable[[str], int]) -> Iterator[str]:
        """The ids of the live memories at or under ``prefix``, in position order."""
        spaces = self.spaces(prefix)
        if len(spaces) == 1:
            return iter(self._spaces[spaces[0]])
        return heapq.merge(*(self._spaces[ns] for ns in spaces), key=position)


def _discard(index: dict[_K, dict[_V, None]], at: _K, item: _V) -> bool:
    """Take ``item`` out of ``index[at]``, dropping the set when it empties; True if it did."""
    items = index[at]
    del items[item]
    if items:
        return False
    del index[at]
    return True
