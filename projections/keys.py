"""Keys, namespaces and value filters on the read side: pure functions every read model shares.

A read model finds candidates through its own indexes (the holder of a key, the memories under
a namespace prefix, the namespaces present); what is left (a value filter, the order, a page)
is computed here, the same for every backend. The reference answers, from a whole fold, are
here too: the property tests compare each model with them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from memswarm_es.errors import InvalidInputError
from memswarm_es.namespaces import Namespace, check_namespace, check_pattern, matches, under
from memswarm_es.scopes import Scope

from .fold import MemoryEntry, may_read

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
ORDERS = (None, "updated_at")
Condition = tuple[str, str, Any]  # (field, operator, operand)


def check_filter(filter: Mapping[str, Any] | None) -> tuple[Condition, ...]:
    """A value filter as conditions: ``{"field": v}`` means ``$eq``; ``{"field": {"$gt": v,
    ...}}`` any of :data:`OPERATORS`; :class:`InvalidInputError` for anything else."""
    if filter is None:
        return ()
    if not isinstance(filter, Mapping):
        raise InvalidInputError(f"a filter is a mapping, not {type(filter).__name__}")
    found: list[Condition] = []
    for name, wanted in filter.items():
        if not isinstance(name, str):
            raise InvalidInputError("a filter names value fields by text")
        if isinstance(wanted, Mapping) and any(isinstance(k, str) and k.startswith("$")
                                               for k in wanted):
            for op, operand in wanted.items():
                if op not in OPERATORS:
                    raise InvalidInputError(f"unknown filter operator {op!r}; use {OPERATORS}")
                if op not in ("$eq", "$ne") and not _is_number(operand):
                    raise InvalidInputError(f"{op} compares numbers, not {operand!r}")
                found.append((name, op, operand))
        else:
            found.append((name, "$eq", wanted))
    return tuple(found)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _holds(value: Any, condition: Condition) -> bool:
    name, op, operand = condition
    item = value.get(name) if isinstance(value, dict) else None
    if op == "$eq":
        return bool(item == operand)
    if op == "$ne":
        return bool(item != operand)
    if not _is_number(item):
        return False
    if op == "$gt":
        return bool(item > operand)
    if op == "$gte":
        return bool(item >= operand)
    if op == "$lt":
        return bool(item < operand)
    return bool(item <= operand)


def passes(entry: MemoryEntry, conditions: tuple[Condition, ...]) -> bool:
    """True if ``entry``'s value (a map) meets every condition."""
    return passes_value(entry.value, conditions)


def passes_value(value: Any, conditions: tuple[Condition, ...]) -> bool:
    """True if ``value`` (a map) meets every condition."""
    return all(_holds(value, c) for c in conditions)


@dataclass(frozen=True, slots=True)
class Query:
    """What a read asks beyond its scope: the namespaces (``prefix``), a value filter, the
    order (``None``: position, first written first; ``"updated_at"``: last changed first) and
    a page."""

    prefix: Namespace = ()
    conditions: tuple[Condition, ...] = ()
    order_by: str | None = None
    limit: int | None = None
    offset: int = 0

    @classmethod
    def checked(cls, namespace_prefix: object = None, filter: Mapping[str, Any] | None = None,
                order_by: str | None = None, limit: int | None = None,
                offset: int = 0) -> Query:
        """A query from a caller's arguments, each checked (:class:`InvalidInputError`)."""
        prefix = () if namespace_prefix is None else check_namespace(namespace_prefix,
                                                                     "namespace_prefix")
        if order_by not in ORDERS:
            raise InvalidInputError(f"order_by is one of {ORDERS}, not {order_by!r}")
        check_page(limit, offset)
        return cls(prefix, check_filter(filter), order_by, limit, offset)

    def plain(self) -> bool:
        """True if the query asks nothing beyond a scope."""
        return self == Query()

    def answer(self, candidates: Iterable[MemoryEntry]) -> list[MemoryEntry]:
        """The page of ``candidates`` (in position order, all under the prefix) that passes
        the filter, in the order asked."""
        found = [e for e in candidates if passes(e, self.conditions)] if self.conditions \
            else list(candidates)
        if self.order_by == "updated_at":
            found.sort(key=lambda e: (-e.updated_at_us, e.position))
        end = None if self.limit is None else self.offset + self.limit
        return found[self.offset:end]


def check_page(limit: int | None, offset: int) -> None:
    if limit is not None and (not _is_count(limit)):
        raise InvalidInputError(f"limit must be a non-negative int, not {limit!r}")
    if not _is_count(offset):
        raise InvalidInputError(f"offset must be a non-negative int, not {offset!r}")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True, slots=True)
class NamespaceQuery:
    """Which namespaces to list: those matching ``prefix`` and ``suffix`` (``*`` any label),
    cut to ``max_depth`` labels, sorted, a page of them."""

    prefix: Namespace | None = None
    suffix: Namespace | None = None
    max_depth: int | None = None
    limit: int = 100
    offset: int = 0

    @classmethod
    def checked(cls, prefix: object = None, suffix: object = None,
                max_depth: int | None = None, limit: int = 100,
                offset: int = 0) -> NamespaceQuery:
        if max_depth is not None and (not _is_count(max_depth) or max_depth < 1):
            raise InvalidInputError(f"max_depth must be a positive int, not {max_depth!r}")
        check_page(limit, offset)
        return cls(None if prefix is None else check_pattern(prefix, "prefix"),
                   None if suffix is None else check_pattern(suffix, "suffix"),
                   max_depth, limit, offset)

    @property
    def fixed_prefix(self) -> Namespace:
        """The labels of the prefix before its first wildcard: every match lies under them."""
        labels: list[str] = []
        for label in self.prefix or ():
            if label == "*":
                break
            labels.append(label)
        return tuple(labels)

    def answer(self, present: Iterable[Namespace]) -> list[Namespace]:
        """The page of the ``present`` namespaces (each holding a live memory) asked for."""
        found = {ns if self.max_depth is None else ns[:self.max_depth]
                 for ns in present if ns and matches(ns, self.prefix, self.suffix)}
        return sorted(found)[self.offset:self.offset + self.limit]


# --- the reference answers, from a whole fold --------------------------------------------------


def key_holder(entries: Iterable[MemoryEntry], namespace: Namespace,
               key: str) -> MemoryEntry | None:
    """The memory holding ``key`` in ``namespace``: of the live memories written with it (a
    log written by MemSwarm holds at most one; any other holds any number), the first."""
    holders = [e for e in entries if e.key == key and e.namespace == namespace]
    return min(holders, key=lambda e: e.position) if holders else None


def select_query(entries: Iterable[MemoryEntry], scope: Scope, query: Query,
                 principals: frozenset[str] | None = None) -> list[MemoryEntry]:
    """The answer to ``query`` inside ``scope`` for a reader named by ``principals``."""
    return query.answer(sorted((e for e in entries if scope.matches(e.scope)
                                and under(e.namespace, query.prefix)
                                and may_read(e, principals)), key=lambda e: e.position))


def namespaces_of(entries: Iterable[MemoryEntry], query: NamespaceQuery,
                  principals: frozenset[str] | None = None) -> list[Namespace]:
    """The namespaces listed for a reader named by ``principals``."""
    return query.answer({e.namespace for e in entries if may_read(e, principals)})
