"""A LangGraph store over a shared memory: ``MemSwarmStore(swarm)`` or
``MemSwarmStore(swarm.agent("planner"))`` (extra ``langgraph``).

An item is a memory addressed by its namespace and key: every put, update and delete is an
event in the log, so ``history``, ``audit``, ``as_of`` and ``verify`` work on what a graph
wrote. Over an agent handle the graph acts as that agent: its writes are its own, and it sees
only what the agent may read.

A batch follows LangGraph's rules: its reads see the state before it; its puts (the last one
per namespace and key wins; ``None`` deletes) are applied after the reads as one atomic append
(:meth:`~memswarm_es.memory.SharedMemory.apply`). Search filters by namespace prefix and value
fields; a ``query`` is ignored, as LangGraph's own stores ignore it without an index (a search
by meaning is not served here yet). Items are listed in the order they were first written.
TTL is not supported (``supports_ttl`` is False).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    validate_op_namespace,
)

from memswarm_es.agent import AgentMemory
from memswarm_es.batch import Delete, Put
from memswarm_es.errors import InvalidInputError, NotSupportedError
from memswarm_es.memory import (
    InMemorySharedMemory,
    PostgresSharedMemory,
    SharedMemory,
    SQLiteSharedMemory,
)
from memswarm_es.namespaces import matches
from projections.fold import MemoryEntry

#: The page listing every namespace (to filter by more than one prefix or suffix).
_EVERY = 1 << 62


class MemSwarmStore(BaseStore):
    """A :class:`~langgraph.store.base.BaseStore` over ``memory`` (a shared memory, acting as
    the operator, or an agent handle, acting as that agent)."""

    supports_ttl = False

    def __init__(self, memory: SharedMemory | AgentMemory, *, index: Any = None) -> None:
        if index is not None:
            raise NotSupportedError("MemSwarmStore does not search by meaning yet; give no index")
        self.memory = memory

    @classmethod
    @contextlib.contextmanager
    def from_conn_string(cls, conn_string: str, *,
                         agent: str | None = None) -> Iterator[MemSwarmStore]:
        """A store over the memory at ``conn_string`` (``sqlite:///swarm.db``,
        ``postgresql+psycopg://...``, ``memory://``), closed on exit; ``agent`` acts as
        that agent."""
        memory = _open(conn_string)
        try:
            yield cls(memory if agent is None else memory.agent(agent))
        finally:
            memory.close()

    def setup(self) -> None:
        """Nothing to make: a memory makes its tables when opened. Catches its view up."""
        self.memory.sync()

    # --- batches --------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
        results: list[Result] = [None] * len(ops)
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for at, op in enumerate(ops):
            if isinstance(op, PutOp):
                puts[op.namespace, op.key] = op  # the last one wins, in the first's place
            elif isinstance(op, GetOp):
                entry = self.memory.get_by_key(op.namespace, op.key)
                results[at] = None if entry is None else _item(entry)
            elif isinstance(op, SearchOp):
                results[at] = self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[at] = self._list_namespaces(op)
            else:
                raise InvalidInputError(f"unknown store operation {op!r}")
        if puts:
            self.memory.apply([
                Delete(namespace=op.namespace, key=op.key) if op.value is None
                else Put(op.namespace, op.key, dict(op.value)) for op in puts.values()])
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    def _search(self, op: SearchOp) -> list[SearchItem]:
        found = self.memory.read_scope(namespace_prefix=op.namespace_prefix,
                                       filter=op.filter or None, limit=op.limit,
                                       offset=op.offset)
        return [SearchItem(e.namespace, e.key or "", e.value, e.created_at, e.updated_at)
                for e in found]

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = op.match_conditions or ()
        prefixes = [c.path for c in conditions if c.match_type == "prefix"]
        suffixes = [c.path for c in conditions if c.match_type == "suffix"]
        if len(prefixes) <= 1 and len(suffixes) <= 1:
            return self.memory.namespaces(prefixes[0] if prefixes else None,
                                          suffixes[0] if suffixes else None, op.max_depth,
                                          op.limit, op.offset)
        present = [ns for ns in self.memory.namespaces(limit=_EVERY)
                   if all(matches(ns, p, None) for p in prefixes)
                   and all(matches(ns, None, s) for s in suffixes)]
        cut = sorted({ns if op.max_depth is None else ns[:op.max_depth] for ns in present})
        return cut[op.offset:op.offset + op.limit]


def _item(entry: MemoryEntry) -> Item:
    return Item(value=entry.value, key=entry.key or "", namespace=entry.namespace,
                created_at=entry.created_at, updated_at=entry.updated_at)


def _open(conn_string: str) -> SharedMemory:
    if conn_string == "memory://":
        return InMemorySharedMemory()
    if conn_string.startswith("sqlite:///"):
        return SQLiteSharedMemory(conn_string[len("sqlite:///"):])
    if conn_string.startswith("postgresql"):
        return PostgresSharedMemory(conn_string)
    raise InvalidInputError(f"{conn_string}: give sqlite:///PATH, postgresql+psycopg://... "
                            "or memory://")
