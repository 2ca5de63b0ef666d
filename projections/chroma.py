"""The Chroma read model: one document per live memory, scoped semantic search inside Chroma.

Each document's id is the memory id, its text a rendering of the value, its embedding comes
from the embedder (through a cache, so no text is embedded twice), and its metadata carries the
scopes (an absent scope is stored as ``""``, which no id can equal, so it never matches a
filter), the position, and the exact entry (msgpack, base64) so that reads return exactly the
fold's entries. Scalar user metadata is kept as ``md:<key>`` for ``where`` filters.

Chroma has no transactions. A commit upserts and deletes by memory id (applying a batch twice
gives the same state) and writes the checkpoint only after the batch, so a projector killed
anywhere converges to the fold of the log when it resumes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memswarm_es.errors import CheckpointConflictError, InvalidInputError
from memswarm_es.events import Event, EventType, decode, encode
from memswarm_es.scopes import SCOPE_NAMES, Scope

from .base import ReadModel
from .embedding import CachedEmbedder
from .fold import Change, MemoryEntry, entry_from_row, entry_row

_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"}
_CHECKPOINT_ID = "checkpoint"
_CONTENT_EVENTS = {EventType.MEMORY_WRITTEN, EventType.MEMORY_UPDATED}


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A memory found by search, with its cosine distance to the query (smaller is closer)."""

    entry: MemoryEntry
    distance: float


def text_of(value: Any) -> str:
    """The text a memory's value is embedded as."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)


class ChromaReadModel(ReadModel):
    """Memories in the Chroma collection ``name`` of ``client`` (a ``PersistentClient`` or an
    ``HttpClient``), embedded by ``embedder``."""

    def __init__(self, client: Any, embedder: CachedEmbedder, name: str = "memswarm") -> None:
        self.client = client
        self.embedder = embedder
        self.name = name
        self._given: dict[str, list[float]] = {}  # vectors the batch being applied carries
        self._meta = client.get_or_create_collection(f"{name}-meta")
        self._docs = self._collection()

    def _collection(self) -> Any:
        return self.client.get_or_create_collection(
            self.name, embedding_function=None, metadata={"hnsw:space": "cosine"})

    # --- ReadModel -----------------------------------------------------------------------------

    def apply(self, events: Sequence[Event]) -> int:
        """As every read model, but first note the vectors that writes carry themselves."""
        self._given = {e.memory_id: e.data["embedding"] for e in events
                       if e.memory_id is not None and e.type in _CONTENT_EVENTS
                       and e.data is not None and "embedding" in e.data}
        try:
            return super().apply(events)
        finally:
            self._given = {}

    def checkpoint(self) -> int:
        found = self._meta.get(ids=[_CHECKPOINT_ID], include=["metadatas"])
        return int(found["metadatas"][0]["position"]) if found["ids"] else 0

    def _set_checkpoint(self, position: int) -> None:
        self._meta.upsert(ids=[_CHECKPOINT_ID], embeddings=[[0.0]],
                          metadatas=[{"position": position}])

    def get_many(self, memory_ids: Iterable[str]) -> dict[str, MemoryEntry]:
        ids = list(memory_ids)
        if not ids:
            return {}
        found = self._docs.get(ids=ids, include=["metadatas"])
        return {i: _entry(m) for i, m in zip(found["ids"], found["metadatas"], strict=True)}

    def commit(self, changes: Sequence[Change], expected_checkpoint: int, checkpoint: int) -> None:
        actual = self.checkpoint()
        if actual != expected_checkpoint:
            raise CheckpointConflictError(expected_checkpoint, actual)
        puts = [c.after for c in changes if c.after is not None]
        gone = [c.memory_id for c in changes if c.after is None]
        if puts:
            texts = [text_of(e.value) for e in puts]
            given = self._given
            needed = [t for e, t in zip(puts, texts, strict=True) if e.memory_id not in given]
            computed = iter(self.embedder(needed) if needed else [])
            vectors = [given[e.memory_id] if e.memory_id in given else next(computed)
                       for e in puts]
            self._docs.upsert(ids=[e.memory_id for e in puts], documents=texts,
                              embeddings=[list(map(float, v)) for v in vectors],
                              metadatas=[_metadata(e) for e in puts])
        if gone:
            self._docs.delete(ids=gone)
        self._set_checkpoint(checkpoint)

    def clear(self) -> None:
        self.client.delete_collection(self.name)
        self._docs = self._collection()
        self._set_checkpoint(0)

    def drop(self) -> None:
        """Delete the collection and its checkpoint."""
        for name in (self.name, f"{self.name}-meta"):
            self.client.delete_collection(name)

    def read_scope(self, scope: Scope) -> list[MemoryEntry]:
        found = self._docs.get(where=_all_of(_scope_clauses(scope)), include=["metadatas"])
        return sorted((_entry(m) for m in found["metadatas"]), key=lambda e: e.position)

    # --- search --------------------------------------------------------------------------------

    def search(self, query: str, scope: Scope, k: int = 10,
               where: Mapping[str, Any] | None = None) -> list[SearchHit]:
        """The ``k`` memories inside ``scope`` (and ``where``) closest to ``query``; the filter
        runs inside Chroma, before the top ``k`` is taken."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("the search query must be a non-empty string")
        if not isinstance(k, int) or k < 1:
            raise InvalidInputError("k must be an int of at least 1")
        flt = _all_of(_scope_clauses(scope) + _user_filter(where or {}))
        (vector,) = self.embedder([query])
        result = self._docs.query(query_embeddings=[list(map(float, vector))], n_results=k,
                                  where=flt, include=["metadatas", "distances"])
        return [SearchHit(_entry(m), float(d))
                for m, d in zip(result["metadatas"][0], result["distances"][0], strict=True)]


def current_collection(client: Any, base: str) -> tuple[str, str | None]:
    """(collection, model id) serving under the name ``base``: ``base`` itself until a
    re-embedding points ``base`` at a new collection."""
    pointer = client.get_or_create_collection(f"{base}-pointer")
    found = pointer.get(ids=["current"], include=["metadatas"])
    if not found["ids"]:
        return base, None
    meta = found["metadatas"][0]
    return meta["collection"], meta["model"]


def point(client: Any, base: str, collection: str, model_id: str) -> None:
    """Make ``base`` name ``collection`` (embedded by ``model_id``): one upsert, atomic."""
    client.get_or_create_collection(f"{base}-pointer").upsert(
        ids=["current"], embeddings=[[0.0]],
        metadatas=[{"collection": collection, "model": model_id}])


def _metadata(entry: MemoryEntry) -> dict[str, Any]:
    meta: dict[str, Any] = {name: getattr(entry, name) or "" for name in SCOPE_NAMES}
    meta["position"] = entry.position
    meta["version"] = entry.version
    meta["entry"] = base64.b64encode(encode(entry_row(entry))).decode()
    for key, value in entry.metadata.items():
        if isinstance(value, (str, int, float, bool)) and not isinstance(value, bytes):
            meta[f"md:{key}"] = value
    return meta


def _entry(meta: Mapping[str, Any]) -> MemoryEntry:
    return entry_from_row(decode(base64.b64decode(meta["entry"])))


def _scope_clauses(scope: Scope) -> list[dict[str, Any]]:
    return [{name: {"$eq": value}} for name, value in scope.parts()]


def _all_of(clauses: list[dict[str, Any]]) -> dict[str, Any] | None:
    return None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _user_filter(where: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``where`` on the memories' metadata keys, as Chroma clauses on ``md:<key>``."""
    if not isinstance(where, Mapping):
        raise InvalidInputError("where must be a mapping")
    clauses: list[dict[str, Any]] = []
    for key, condition in where.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise InvalidInputError(f"{key} takes a non-empty list of filters")
            parts = [c for sub in condition for c in _user_filter(sub)]
            clauses.append({key: parts} if len(parts) > 1 else parts[0])
            continue
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise InvalidInputError(f"unknown filter key {key!r}")
        if isinstance(condition, Mapping):
            unknown = set(condition) - _OPERATORS
            if unknown or len(condition) != 1:
                raise InvalidInputError(f"unknown filter operator(s) {sorted(map(str, unknown))} "
                                        f"for {key!r}; use one of {sorted(_OPERATORS)}")
            clauses.append({f"md:{key}": dict(condition)})
        else:
            clauses.append({f"md:{key}": {"$eq": condition}})
    return clauses
