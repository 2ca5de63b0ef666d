"""A LangGraph store over a shared memory: ``MemSwarmStore(swarm)`` or
``MemSwarmStore(swarm.agent("planner"))`` (extra ``langgraph``).

An item is a memory addressed by its namespace and key: every put, update and delete is an
event in the log, so ``history``, ``audit``, ``as_of`` and ``verify`` work on what a graph
wrote. Over an agent handle the graph acts as that agent: its writes are its own, and it sees
only what the agent may read.

A batch follows LangGraph's rules: its reads see the state before it; its puts (the last one
per namespace and key wins; ``None`` deletes) are applied after the reads as one atomic append
(:meth:`~memswarm_es.memory.SharedMemory.apply`). Search filters by namespace prefix and value
fields; items are listed in the order they were first written. TTL (``ttl=`` on a put, the
store's ``ttl`` config, ``sweep_ttl`` and ``start_ttl_sweeper``) is recorded as events: see
:mod:`memswarm_es.integrations.ttl`.

Search by meaning, with ``index=IndexConfig(dims=..., embed=..., fields=[...])`` as LangGraph's
stores take it (``embed``: a LangChain ``Embeddings``, a sync or async function, or a
``"provider:model"`` string, resolved by LangGraph's ``ensure_embeddings``). A put embeds the
text at the configured fields (or at the fields its ``index`` names; ``index=False``: none)
and records the memory with that vector in its event (``Put(..., embedding=...)``), so the
vector is in the log and every read model's entries carry it (``MemoryEntry.embedding``).
A put of a new value without a vector leaves the memory without one; a put of the same value
changes nothing (LangGraph's ``InMemoryStore`` keeps a key's old vectors on either).

One vector per memory: the vector of its one text (the whole value as JSON by default); with
several texts (several fields, or a path through a list) the mean of their unit vectors, one
vector that every field counts in, as the log and a Chroma view carry one per memory.
``InMemoryStore`` keeps a vector per text and scores an item by its best one, so rankings
agree exactly when each item has one text.

``search(prefix, query=...)`` is ranked here, exactly: the store reads the live memories under
the prefix that match the filter and that the acting agent may read (the same read as a
search without a query, served by any read model), and sorts them by cosine similarity to the
embedded query (``score``), best first, ties in the order they were written; those without a
vector (or with a vector of other dimensions) follow, unscored, in that order; ``offset`` and
``limit`` page through the whole. A Chroma view's own search is not used: it embeds the query
with its own model and filters on metadata, not on the value fields LangGraph filters on.
A vector of a size other than ``dims`` from the embed function: :class:`InvalidValueError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

import numpy as np
from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from memswarm_es.agent import AgentMemory
from memswarm_es.batch import Change, Delete, Put
from memswarm_es.errors import InvalidInputError, InvalidValueError
from memswarm_es.events import from_micros, now_micros
from memswarm_es.integrations import ttl as ttls
from memswarm_es.log import open_log
from memswarm_es.memory import (
    InMemorySharedMemory,
    PostgresSharedMemory,
    SharedMemory,
    SQLiteSharedMemory,
)
from memswarm_es.namespaces import matches
from projections import open_read_model
from projections.fold import MemoryEntry

#: The page listing every namespace (to filter by more than one prefix or suffix).
_EVERY = 1 << 62


class MemSwarmStore(BaseStore):
    """A :class:`~langgraph.store.base.BaseStore` over ``memory`` (a shared memory, acting as
    the operator, or an agent handle, acting as that agent)."""

    supports_ttl = True

    def __init__(self, memory: SharedMemory | AgentMemory, *,
                 index: IndexConfig | Mapping[str, Any] | None = None,
                 ttl: TTLConfig | None = None) -> None:
        self.memory = memory
        self.index = None if index is None else Index.of(index)
        self.ttl_config = ttl
        self._items = _Items()
        self._sweeper: ttls.Sweeper | None = None

    @classmethod
    @contextlib.contextmanager
    def from_conn_string(cls, conn_string: str, *, agent: str | None = None,
                         index: IndexConfig | Mapping[str, Any] | None = None,
                         read_model: str | None = None,
                         ttl: TTLConfig | None = None) -> Iterator[MemSwarmStore]:
        """A store over the memory at ``conn_string`` (``sqlite:///swarm.db``,
        ``postgresql+psycopg://...``, ``memory://``), closed on exit; ``agent`` acts as
        that agent. ``read_model``: the URL of the view to read from (``memory://``: this
        process's memory, filled from the whole log at open, then the fastest reads;
        ``redis://...``) instead of the SQL view kept in the log's own database."""
        memory = _open(conn_string) if read_model is None else SharedMemory(
            open_log(conn_string), open_read_model(read_model))
        store = None
        try:
            store = cls(memory if agent is None else memory.agent(agent), index=index, ttl=ttl)
            yield store
        finally:
            if store is not None:
                store.stop_ttl_sweeper()
            memory.close()

    def setup(self) -> None:
        """Nothing to make: a memory makes its tables when opened. Catches its view up."""
        self.memory.sync()

    # --- time to live ------------------------------------------------------------------------

    def sweep_ttl(self) -> int:
        """Delete every item this store may read whose TTL has run out (a delete event each);
        return how many."""
        return ttls.sweep(self.memory)

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None
                          ) -> concurrent.futures.Future[None]:
        """Sweep every ``sweep_interval_minutes`` (else the TTL config's, else 5) in a thread
        until :meth:`stop_ttl_sweeper`; without a TTL config, nothing (a future already done).
        The future ends when the sweeper does."""
        if not self.ttl_config:
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            return done
        if self._sweeper is None:
            minutes = (sweep_interval_minutes or self.ttl_config.get("sweep_interval_minutes")
                       or ttls.DEFAULT_SWEEP_MINUTES)
            self._sweeper = ttls.Sweeper(self.memory, minutes)
        return self._sweeper.future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper, if one runs; True if it ended within ``timeout`` seconds."""
        sweeper, self._sweeper = self._sweeper, None
        return sweeper is None or sweeper.stop(timeout)

    def _refreshing(self, refresh_ttl: bool | None) -> bool:
        """Whether a read refreshes the TTL of what it returns (LangGraph's rule)."""
        if refresh_ttl is not None:
            return refresh_ttl
        return True if self.ttl_config is None else self.ttl_config.get("refresh_on_read", True)

    def _refresh(self, entries: Iterable[MemoryEntry]) -> None:
        """Restart the TTL of ``entries`` (those a read returned that have one)."""
        ttls.apply_each(self.memory, ttls.refreshes(entries))

    # --- single reads, without a batch ------------------------------------------------------

    def get(self, namespace: tuple[str, ...], key: str, *,
            refresh_ttl: bool | None = None) -> Item | None:
        """:meth:`BaseStore.get`, the same checks and answer, read at once (no batch)."""
        op = GetOp(namespace, str(key), self._refreshing(refresh_ttl))
        validate_op_namespace(op)
        return cast("Item | None", self._read_now(op))

    def search(self, namespace_prefix: tuple[str, ...], /, *, query: str | None = None,
               filter: dict[str, Any] | None = None, limit: int = 10, offset: int = 0,
               refresh_ttl: bool | None = None) -> list[SearchItem]:
        """:meth:`BaseStore.search`; without a query to embed, read at once (no batch)."""
        op = SearchOp(namespace_prefix, filter, limit, offset, query,
                      self._refreshing(refresh_ttl))
        if query and self.index is not None:  # the query embedded as a batch embeds it
            return cast("list[SearchItem]", self.batch([op])[0])
        validate_op_namespace(op)
        return cast("list[SearchItem]", self._read_now(op))

    def _read_now(self, op: GetOp | SearchOp) -> Result:
        """The answer to one read outside a batch, the TTLs it refreshes restarted."""
        refreshed: list[MemoryEntry] = []
        result = self._read(op, {}, refreshed)
        if refreshed:
            self._refresh(refreshed)
        return result

    def _read(self, op: GetOp | SearchOp, queries: dict[str, np.ndarray],
              refreshed: list[MemoryEntry]) -> Result:
        """The answer to a get or a search (``queries`` embedded); what it returns that has a
        TTL the read refreshes is added to ``refreshed``."""
        if isinstance(op, GetOp):
            entry = self.memory.get_by_key(op.namespace, op.key)
            found = [] if entry is None else [entry]
            result: Result = None if entry is None else self._items.item(entry)
        else:
            scored = self._found(op, queries)
            found = [entry for entry, _ in scored]
            result = self._search_items(scored)
        if op.refresh_ttl:
            refreshed += (e for e in found if ttls.TTL_MINUTES in e.metadata)
        return result

    # --- batches --------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = _checked(ops)
        puts = _last_puts(ops)
        if self.index is None:
            return self._run(ops, puts, {}, {})
        queries = self.index.embed_queries(_queries(ops))
        return self._run(ops, puts, queries, self.index.embed_puts(puts.values()))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = _checked(ops)
        puts = _last_puts(ops)
        queries: dict[str, np.ndarray] = {}
        vectors: dict[Address, list[float]] = {}
        if self.index is not None:
            queries = await self.index.aembed_queries(_queries(ops))
            vectors = await self.index.aembed_puts(puts.values())
        return await asyncio.to_thread(self._run, ops, puts, queries, vectors)

    def _run(self, ops: list[Op], puts: dict[Address, PutOp], queries: dict[str, np.ndarray],
             vectors: dict[Address, list[float]]) -> list[Result]:
        """Answer the reads of ``ops`` (``queries`` embedded), then apply ``puts`` (with the
        ``vectors`` of those indexed) as one append."""
        results: list[Result] = [None] * len(ops)
        refreshed: list[MemoryEntry] = []
        for at, op in enumerate(ops):
            if isinstance(op, (GetOp, SearchOp)):
                results[at] = self._read(op, queries, refreshed)
            elif isinstance(op, ListNamespacesOp):
                results[at] = self._list_namespaces(op)
        if puts:
            self.memory.apply([_change(op, vectors.get(address))
                               for address, op in puts.items()])
        if refreshed:  # (an item the batch put has the TTL of its put)
            self._refresh(e for e in refreshed if (e.namespace, e.key) not in puts)
        return results

    def _found(self, op: SearchOp, queries: dict[str, np.ndarray]
               ) -> list[tuple[MemoryEntry, float | None]]:
        """What ``op`` finds, each entry with its score (``None``: no query, or no vector)."""
        if op.query and op.query in queries:
            found = self.memory.read_scope(namespace_prefix=op.namespace_prefix,
                                           filter=op.filter or None)
            return _ranked(found, queries[op.query])[op.offset:op.offset + op.limit]
        return [(entry, None) for entry in self.memory.read_scope(
            namespace_prefix=op.namespace_prefix, filter=op.filter or None, limit=op.limit,
            offset=op.offset)]

    def _search_items(self, found: list[tuple[MemoryEntry, float | None]]
                      ) -> list[SearchItem]:
        unscored = self._items.unscored
        return [unscored(e) if score is None else _search_item(e, score)
                for e, score in found]

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


Address = tuple[tuple[str, ...], str]


@dataclass(frozen=True)
class Index:
    """What a store's ``index`` config says: the vectors' size, the embeddings, and the
    fields to embed (each with its path tokenized as LangGraph's stores tokenize it)."""

    dims: int
    embeddings: Embeddings
    fields: tuple[tuple[str, str | list[str]], ...]

    @classmethod
    def of(cls, config: IndexConfig | Mapping[str, Any]) -> Index:
        """The index ``config`` asks for, checked (:class:`InvalidInputError`)."""
        if not isinstance(config, Mapping):
            raise InvalidInputError(f"index must be an IndexConfig (a dict), not {config!r}")
        dims = config.get("dims")
        if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
            raise InvalidInputError(f"index dims must be a positive int, not {dims!r}")
        fields = config.get("fields") or ["$"]
        if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
            raise InvalidInputError(f"index fields must be a list of paths, not {fields!r}")
        try:
            embeddings = ensure_embeddings(config.get("embed"))
        except ValueError as error:
            raise InvalidInputError(f"index embed: {error}") from error
        return cls(dims, embeddings,
                   tuple((f, f if f == "$" else tokenize_path(f)) for f in fields))

    def texts(self, op: PutOp) -> list[str]:
        """The texts of ``op`` to embed: at its own ``index`` fields, if it names them, else
        at the configured ones (none for a delete or ``index=False``)."""
        if op.value is None or op.index is False:
            return []
        paths = self.fields if op.index is None else [(p, tokenize_path(p)) for p in op.index]
        return [text for _, path in paths for text in get_text_at_path(op.value, path)]

    def embed_queries(self, queries: set[str]) -> dict[str, np.ndarray]:
        return {q: self._checked([self.embeddings.embed_query(q)])[0] for q in queries}

    async def aembed_queries(self, queries: set[str]) -> dict[str, np.ndarray]:
        found = await asyncio.gather(*(self.embeddings.aembed_query(q) for q in queries))
        return {q: self._checked([v])[0] for q, v in zip(queries, found, strict=True)}

    def embed_puts(self, puts: Iterable[PutOp]) -> dict[Address, list[float]]:
        texts = self._texts(puts)
        unique = list(dict.fromkeys(t for found in texts.values() for t in found))
        return self._vectors(texts, unique, self.embeddings.embed_documents(unique)
                             if unique else [])

    async def aembed_puts(self, puts: Iterable[PutOp]) -> dict[Address, list[float]]:
        texts = self._texts(puts)
        unique = list(dict.fromkeys(t for found in texts.values() for t in found))
        return self._vectors(texts, unique, await self.embeddings.aembed_documents(unique)
                             if unique else [])

    def _texts(self, puts: Iterable[PutOp]) -> dict[Address, list[str]]:
        found = {(op.namespace, op.key): self.texts(op) for op in puts}
        return {address: texts for address, texts in found.items() if texts}

    def _vectors(self, texts: dict[Address, list[str]], unique: list[str],
                 embedded: Sequence[Sequence[float]]) -> dict[Address, list[float]]:
        """One vector per put from the vectors of its texts (``embedded``, one per text of
        ``unique``): its text's, or the mean of its texts' unit vectors."""
        if len(embedded) != len(unique):
            raise InvalidValueError(f"the index's embed function returned {len(embedded)} "
                                    f"vectors for {len(unique)} texts")
        by_text = dict(zip(unique, self._checked(embedded), strict=True))
        return {address: _combined([by_text[t] for t in found])
                for address, found in texts.items()}

    def _checked(self, vectors: Sequence[Sequence[float]]) -> list[np.ndarray]:
        """``vectors`` as float arrays, each of ``dims`` finite numbers, else
        :class:`InvalidValueError`."""
        arrays = []
        for vector in vectors:
            try:
                array = np.asarray(vector, dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise InvalidValueError(
                    f"the index's embed function returned a non-vector: {error}") from error
            if array.shape != (self.dims,) or not np.isfinite(array).all():
                raise InvalidValueError(
                    f"the index's embed function returned a vector of shape {array.shape}; "
                    f"the index has dims={self.dims} (finite numbers)")
            arrays.append(array)
        return arrays


def _combined(vectors: list[np.ndarray]) -> list[float]:
    """The one vector of a memory: its only text's, or the mean of its texts' unit vectors."""
    if len(vectors) == 1:
        return [float(x) for x in vectors[0]]
    units = [v / n if (n := np.linalg.norm(v)) > 0 else v for v in vectors]
    return [float(x) for x in np.mean(units, axis=0)]


def _ranked(entries: list[MemoryEntry],
            query: np.ndarray) -> list[tuple[MemoryEntry, float | None]]:
    """``entries`` (in the order they were written) by cosine similarity to ``query``, best
    first (a stable sort: ties keep that order), then those without a vector of its size."""
    scored = [e for e in entries if e.embedding is not None and len(e.embedding) == len(query)]
    unscored = [e for e in entries if e.embedding is None or len(e.embedding) != len(query)]
    ranked: list[tuple[MemoryEntry, float | None]] = []
    if scored:
        matrix = np.asarray([e.embedding for e in scored], dtype=np.float64)
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
        dots = matrix @ query
        scores = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
        order = np.argsort(-scores, kind="stable")
        ranked = [(scored[i], float(scores[i])) for i in order]
    return ranked + [(e, None) for e in unscored]


def _checked(ops: Iterable[Op]) -> list[Op]:
    """``ops`` as a list, each a known operation with a valid namespace."""
    ops = list(ops)
    for op in ops:
        if not isinstance(op, (GetOp, PutOp, SearchOp, ListNamespacesOp)):
            raise InvalidInputError(f"unknown store operation {op!r}")
        validate_op_namespace(op)
    return ops


def _last_puts(ops: list[Op]) -> dict[Address, PutOp]:
    """The puts of ``ops``, the last one per namespace and key winning, in the first's place."""
    return {(op.namespace, op.key): op for op in ops if isinstance(op, PutOp)}


def _queries(ops: list[Op]) -> set[str]:
    return {op.query for op in ops if isinstance(op, SearchOp) and op.query}


def _change(op: PutOp, vector: list[float] | None) -> Change:
    if op.value is None:
        return Delete(namespace=op.namespace, key=op.key)
    return Put(op.namespace, op.key, dict(op.value),
               ttls.expiring({}, op.ttl, now_micros()) or None, embedding=vector)


class _Items:
    """The items made of entries, kept while their entry is the one the view holds (an
    entry is never changed: a new version is a new entry), as LangGraph's ``InMemoryStore``
    hands out the items it keeps. Their values are read-only; at most :data:`KEPT` of each
    kind are kept (then they are made afresh)."""

    KEPT = 1 << 16

    def __init__(self) -> None:
        self._items: dict[str, tuple[MemoryEntry, Item]] = {}
        self._unscored: dict[str, tuple[MemoryEntry, SearchItem]] = {}

    def item(self, entry: MemoryEntry) -> Item:
        return _kept(self._items, entry, _item, self.KEPT)

    def unscored(self, entry: MemoryEntry) -> SearchItem:
        """The item of ``entry`` as a search without a query finds it (no score)."""
        return _kept(self._unscored, entry, _unscored_item, self.KEPT)


_Made = TypeVar("_Made")


def _kept(kept: dict[str, tuple[MemoryEntry, _Made]], entry: MemoryEntry,
          make: Callable[[MemoryEntry], _Made], most: int) -> _Made:
    """What ``kept`` holds for ``entry`` (made of that very entry), else ``make(entry)``,
    kept (all are dropped first once ``most`` are held)."""
    found = kept.get(entry.memory_id)
    if found is not None and found[0] is entry:
        return found[1]
    made = make(entry)
    if len(kept) >= most:
        kept.clear()
    kept[entry.memory_id] = entry, made
    return made


def _unscored_item(entry: MemoryEntry) -> SearchItem:
    return _search_item(entry, None)


def _item(entry: MemoryEntry) -> Item:
    created, updated = _times(entry)
    return Item(value=entry.value, key=entry.key or "", namespace=entry.namespace,
                created_at=created, updated_at=updated)


def _search_item(entry: MemoryEntry, score: float | None) -> SearchItem:
    created, updated = _times(entry)
    return SearchItem(entry.namespace, entry.key or "", entry.value, created, updated, score)


def _times(entry: MemoryEntry) -> tuple[datetime, datetime]:
    """When ``entry`` was created and last updated (one datetime when it never was)."""
    created = _moment(entry.created_at_us)
    if entry.updated_at_us == entry.created_at_us:
        return created, created
    return created, _moment(entry.updated_at_us)


#: A time in microseconds as a datetime, remembered: items are read again and again, and
#: datetimes do not change.
_moment = functools.lru_cache(maxsize=1 << 16)(from_micros)


def _open(conn_string: str) -> SharedMemory:
    if conn_string == "memory://":
        return InMemorySharedMemory()
    if conn_string.startswith("sqlite:///"):
        return SQLiteSharedMemory(conn_string[len("sqlite:///"):])
    if conn_string.startswith("postgresql"):
        return PostgresSharedMemory(conn_string)
    raise InvalidInputError(f"{conn_string}: give sqlite:///PATH, postgresql+psycopg://... "
                            "or memory://")
