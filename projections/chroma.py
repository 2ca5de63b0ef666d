"""The Chroma read model: one document per live memory, scoped semantic search inside Chroma.

Each document's id is the memory id, its text a rendering of the value, its embedding comes
from the embedder (through a cache, so no text is embedded twice), and its metadata carries the
scopes (an absent scope is stored as ``""``, which no id can equal, so it never matches a
filter), the position, and the exact entry (msgpack, base64) so that reads return exactly the
fold's entries. Scalar user metadata is kept as ``md:<key>`` for ``where`` filters, and each
principal of ``readable_by`` as the flag ``r:<principal>`` = 1. The flag is an int, not a bool:
Chroma indexes the int, float and string values of metadata but not the bools, so a filter on
a bool reads every record's metadata (4x the unbound read at 100k memories), one on an int
reads the index. Chroma merges the metadata of an upsert into the record's, so a new version
also removes the keys its previous one had and it has not (a principal no longer allowed, a
metadata key gone). The checkpoint record names the :data:`FORMAT` of the documents; a
collection of another format is cleared when opened, and rebuilt by replay.
_ADDRESS = "addr:"  # + "key", "ns" (the namespace as text) and "ns:<depth>" (each prefix)

Memberships are records of the bookkeeping collection, one per (group, agent). An agent's read
looks up its groups there, then asks Chroma for the documents flagged for one of its principals
(the filter is part of the ``where``, so a search ranks only what the agent may read).

Search ranks exactly when the filter keeps few documents (:data:`EXACT_SEARCH`): Chroma's
vector index, asked to filter, walks its graph from its entry point and can miss the nearest
of a few documents among many nearer ones it may not return. Above that it asks the index,
and ranks exactly after all if the index found fewer than ``k``.

Chroma has no transactions. A commit upserts and deletes by memory id and by membership
(applying a batch twice gives the same state) and writes the checkpoint (with the identity of
the log) only after the batch, so a projector killed anywhere converges to the fold of the log
when it resumes. Chroma has no compare-and-set either, so projectors take turns
(:mod:`projections.chroma_guard`): a batch is read, folded and committed by one projector at a
time, against the checkpoint it finds.

Bookkeeping lives in collections named ``<name>._meta`` and ``<name>._pointer``; a collection
name given by a user may not contain ``._``, so no user collection can be one of them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from numbers import Real
from typing import Any, TypeVar

from memswarm_es.errors import needs_extra

with needs_extra():
    import chromadb.errors
    import numpy as np

from memswarm_es.errors import (
    CheckpointConflictError,
    InvalidInputError,
    InvalidValueError,
    LogMismatchError,
)
from memswarm_es.events import Event, EventType, decode, encode
from memswarm_es.namespaces import Namespace, namespace_from_text, namespace_text
from memswarm_es.principals import principals_of
from memswarm_es.scopes import SCOPE_NAMES, Scope

from .base import SearchableReadModel, SearchHit, link_at, link_of, link_text
from .chroma_guard import guard_for, place_of, purge_content, residue
from .embedding import CachedEmbedder
from .fold import Change, MembershipChange, MemoryEntry, entry_from_row, entry_row, may_read

logger = logging.getLogger(__name__)

_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"}
_CHECKPOINT_ID = "checkpoint"
_CONTENT_EVENTS = {EventType.MEMORY_WRITTEN, EventType.MEMORY_UPDATED}
_RESERVED = "._"  # in bookkeeping collection names only
_INT64 = 1 << 63
_READER = "r:"  # + principal: the flag (1) of a document that principal may read
#: The format of the documents and bookkeeping, in the checkpoint record; 2: int reader flags;
#: 3: key and namespace addresses.
FORMAT = 3
#: A search whose filter keeps at most this many documents ranks them all exactly.
EXACT_SEARCH = 2000
_ADDRESS = "addr:"  # + "key", "ns" (the namespace as text) and "ns:<depth>" (each prefix)
_MEMBER = {"kind": "member"}  # what marks a membership record among the bookkeeping


def check_name(name: str) -> str:
    """A user's collection name, refused (:class:`InvalidInputError`) if it could be one of
    the bookkeeping collections."""
    if not isinstance(name, str) or not name or _RESERVED in name:
        raise InvalidInputError(f"collection name {name!r} must be a non-empty string "
                                f"without {_RESERVED!r} (reserved for bookkeeping)")
    return name


def meta_name(name: str) -> str:
    """The collection holding ``name``'s checkpoint, log identity and lease."""
    return f"{check_name(name)}{_RESERVED}meta"


def pointer_name(base: str) -> str:
    """The collection recording which collection serves under ``base``."""
    return f"{check_name(base)}{_RESERVED}pointer"


def text_of(value: Any) -> str:
    """The text a memory's value is embedded as."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)


class ChromaReadModel(SearchableReadModel):
    """Memories in the Chroma collection ``name`` of ``client`` (a ``PersistentClient`` or an
    ``HttpClient``), embedded by ``embedder``; search distances are cosine distances, exact
    when the search's filter keeps at most ``exact_search`` documents."""

    def __init__(self, client: Any, embedder: CachedEmbedder, name: str = "memswarm",
                 exact_search: int = EXACT_SEARCH) -> None:
        self.client = client
        self.exact_search = exact_search
        self.embedder = embedder
        self.name = name
        self._dimensions: int | None = None
        self._meta = client.get_or_create_collection(meta_name(name))
        self._place = place_of(client)
        self._guard = guard_for(self._place, client, self._meta, name)
        self._docs = self._collection()
        with self._guard:  # not while a projector is between its first documents and checkpoint
            record = self._record()
            if record and record.get("format") != FORMAT:
                logger.warning("collection %r holds format %r, not %r; rebuilding it", name,
                               record.get("format"), FORMAT)
                self.clear()
            elif not record and (self._docs.count() or self._memberships(limit=1)):
                # Documents or memberships without a checkpoint (bookkeeping lost, or kept
                # under an older name): they cannot be trusted to be any position's view.
                logger.warning("collection %r has documents or memberships but no checkpoint; "
                               "rebuilding it", name)
                self.clear()

    def _collection(self) -> Any:
        return self.client.get_or_create_collection(
            self.name, embedding_function=None, metadata={"hnsw:space": "cosine"})

    # --- ReadModel -----------------------------------------------------------------------------

    def applying(self) -> contextlib.AbstractContextManager[object]:
        """One projector at a time reads the checkpoint, folds and commits."""
        return self._guard

    def _record(self) -> dict[str, Any]:
        found = _patient(lambda: self._meta.get(ids=[_CHECKPOINT_ID], include=["metadatas"]))
        return dict(found["metadatas"][0]) if found["ids"] else {}

    def checkpoint(self) -> int:
        return int(self._record().get("position", 0))

    def checkpoint_and_hash(self) -> tuple[int, bytes | None]:
        record = self._record()
        position = int(record.get("position", 0))
        return position, link_at(position, record.get("link"))

    def followed_log(self) -> str | None:
        return self._record().get("log_id") or None

    def _set_checkpoint(self, position: int, log_id: str | None = None,
                        link: bytes | None = None) -> None:
        # Every key, always: Chroma merges the metadata of an upsert into the record's.
        self._meta.upsert(ids=[_CHECKPOINT_ID], embeddings=[[0.0]],
                          metadatas=[{"position": position, "log_id": log_id or "",
                                      "format": FORMAT, "link": link_text(position, link)}])

    def dimensions(self) -> int:
        """How many numbers this collection's vectors have: the embedder's."""
        if self._dimensions is None:
            self._dimensions = self.embedder.dimensions()
        return self._dimensions

    def check_vector(self, vector: Sequence[float]) -> None:
        problem = _vector_problem(vector, self.dimensions())
        if problem:
            raise InvalidValueError(f"embedding {problem}")

    def get_many(self, memory_ids: Iterable[str],
                 reader: str | None = None) -> dict[str, MemoryEntry]:
        ids = list(dict.fromkeys(memory_ids))  # Chroma refuses an id asked for twice
        if not ids:
            return {}
        flt = _all_of(self._reader_clauses(reader))
        found = _patient(lambda: self._docs.get(ids=ids, where=flt, include=["metadatas"]))
        return {i: _entry(m) for i, m in zip(found["ids"], found["metadatas"], strict=True)}

    # --- memberships ---------------------------------------------------------------------------

    def _memberships(self, limit: int | None = None,
                     **match: str) -> list[Mapping[str, Any]]:
        """The metadata of the membership records whose fields equal ``match`` (at most
        ``limit`` of them)."""
        flt = _all_of([_MEMBER, *({k: {"$eq": v}} for k, v in match.items())])
        return _patient(lambda: self._meta.get(where=flt, limit=limit,
                                               include=["metadatas"]))["metadatas"]

    def members(self, group_id: str) -> dict[str, bool]:
        return {m["agent"]: bool(m["admin"]) for m in self._memberships(group=group_id)}

    def groups_of(self, agent_id: str) -> dict[str, bool]:
        return {m["group"]: bool(m["admin"]) for m in self._memberships(agent=agent_id)}

    def _reader_clauses(self, reader: str | None) -> list[dict[str, Any]]:
        """The ``where`` clauses that keep what ``reader`` may read (none for the operator):
        a document flagged for one of its principals, its groups as this model holds them."""
        if reader is None:
            return []
        principals = sorted(principals_of(reader, self.groups_of(reader)))
        return [{"$or": [{_READER + p: {"$eq": 1}} for p in principals]}]

    def _put_memberships(self, memberships: Sequence[MembershipChange]) -> None:
        """Write the net membership changes of a batch: each record whole (so writing it again
        changes nothing), deleting those of agents who left."""
        joined = [c for c in memberships if c.admin is not None]
        left = [_member_id(c) for c in memberships if c.admin is None]
        if joined:
            self._meta.upsert(
                ids=[_member_id(c) for c in joined], embeddings=[[0.0]] * len(joined),
                metadatas=[{**_MEMBER, "agent": c.agent_id, "group": c.group_id,
                            "admin": bool(c.admin)} for c in joined])
        if left:
            self._meta.delete(ids=left)

    # --- committing ----------------------------------------------------------------------------

    def commit(self, changes: Sequence[Change], expected_checkpoint: int, checkpoint: int,
               events: Sequence[Event] = (),
               memberships: Sequence[MembershipChange] = ()) -> None:
        """As every read model; a memory written with a vector of its own (in ``events``)
        keeps it, and one that ``events`` forget also loses its texts' cached vectors and the
        copies Chroma keeps of its content (see :func:`purge_content`)."""
        with self._guard:
            record = self._record()
            actual = int(record.get("position", 0))
            if actual != expected_checkpoint:
                raise CheckpointConflictError(expected_checkpoint, actual)
            followed = record.get("log_id") or None
            if self.log_id is not None and followed not in (None, self.log_id):
                raise LogMismatchError(self.log_id, followed)
            puts = [(c.after, c.before) for c in changes if c.after is not None]
            gone = [c.memory_id for c in changes if c.after is None]
            # Chroma has no transaction: leaves go first and joins last, so that no moment
            # of the commit (nor a projector killed in it) grants more than its end does.
            self._put_memberships([c for c in memberships if c.admin is None])
            if puts:
                self._put(puts, _carried_vectors(events))
            if gone:
                self._docs.delete(ids=gone)
            forgotten = [e.memory_id for e in events if e.memory_id is not None
                         and e.type == EventType.MEMORY_FORGOTTEN]
            if forgotten:
                self.embedder.cache.forget(forgotten)
                purge_content(self._place, self._docs, forgotten)
            self._put_memberships([c for c in memberships if c.admin is not None])
            self._set_checkpoint(checkpoint, self.log_id or followed,
                                 link_of(events, checkpoint))

    def _put(self, puts: list[tuple[MemoryEntry, MemoryEntry | None]],
             carried: Mapping[str, Any]) -> None:
        """Upsert each entry of ``puts`` (with the version its document holds, if any), with
        the vector its event carried (``carried``, by memory id) if that is usable, else its
        text embedded by the model."""
        entries = [after for after, _ in puts]
        texts = [text_of(e.value) for e in entries]
        given: dict[str, Any] = {}
        for memory_id, vector in carried.items():
            problem = _vector_problem(vector, self.dimensions())
            if problem:
                logger.warning("memory %s carries an embedding that %s; embedding its text "
                            "instead", memory_id, problem)
            else:
                given[memory_id] = vector
        needed = [(e.memory_id, t) for e, t in zip(entries, texts, strict=True)
                  if e.memory_id not in given]
        computed = iter(self.embedder([t for _, t in needed], [m for m, _ in needed])
                        if needed else [])
        vectors = [given[e.memory_id] if e.memory_id in given else next(computed)
                   for e in entries]
        self._docs.upsert(ids=[e.memory_id for e in entries], documents=texts,
                          embeddings=[[float(x) for x in v] for v in vectors],
                          metadatas=[_metadata(after, before) for after, before in puts])

    def clear(self) -> None:
        """Drop everything; the checkpoint goes first, so that a clear killed midway leaves
        documents or memberships without a checkpoint, which the next open clears again."""
        with self._guard:
            self._meta.delete(ids=[_CHECKPOINT_ID])
            self._meta.delete(where=_MEMBER)
            self.client.delete_collection(self.name)
            self._docs = self._collection()
            self._set_checkpoint(0)

    def drop(self) -> None:
        """Delete the collection and its bookkeeping."""
        with self._guard:
            self.client.delete_collection(self.name)
        self.client.delete_collection(meta_name(self.name))  # the lease was in it
        self._guard.close()

    def forget_residue(self) -> str | None:
        """What forgetting a memory leaves in this Chroma (``None``: nothing of it)."""
        return residue(self._place)

    def close(self) -> None:
        """Release the vector cache's connection and the projectors' lock."""
        self._guard.close()
        self.embedder.cache.close()

    def read_scope(self, scope: Scope, reader: str | None = None) -> list[MemoryEntry]:
        flt = _all_of(_scope_clauses(scope) + self._reader_clauses(reader))
        found = _patient(lambda: self._docs.get(where=flt, include=["metadatas"]))
        return sorted((_entry(m) for m in found["metadatas"]), key=lambda e: e.position)

    # --- keys and namespaces: metadata keys the ``where`` selects by ----------------------

    def get_by_key(self, namespace: Namespace, key: str,
                   reader: str | None = None) -> MemoryEntry | None:
        flt = {"$and": [{_ADDRESS + "ns": namespace_text(namespace) or _ROOT},
                        {_ADDRESS + "key": key}]}
        found = _patient(lambda: self._docs.get(where=flt, include=["metadatas"]))
        holders = [_entry(m) for m in found["metadatas"]]
        if not holders:
            return None
        entry = min(holders, key=lambda e: e.position)
        if reader is None or may_read(entry, principals_of(reader, self.groups_of(reader))):
            return entry
        return None

    def read_namespace(self, scope: Scope, prefix: Namespace, reader: str | None = None,
                       first: int | None = None) -> list[MemoryEntry]:
        if not prefix:
            return self.read_scope(scope, reader)[:first]
        flt = _all_of(_scope_clauses(scope) + self._reader_clauses(reader)
                      + [{f"{_ADDRESS}ns:{len(prefix)}": namespace_text(prefix)}])
        found = _patient(lambda: self._docs.get(where=flt, include=["metadatas"]))
        return sorted((_entry(m) for m in found["metadatas"]),
                      key=lambda e: e.position)[:first]

    def namespaces_held(self, prefix: Namespace, reader: str | None = None) -> set[Namespace]:
        """Read from the metadata of the memories under ``prefix`` (Chroma lists no distinct
        values): this costs what the prefix holds."""
        under = [{f"{_ADDRESS}ns:{len(prefix)}": namespace_text(prefix)}] if prefix else \
            [{_ADDRESS + "in": True}]
        flt = _all_of(under + self._reader_clauses(reader))
        found = _patient(lambda: self._docs.get(where=flt, include=["metadatas"]))
        return {namespace_from_text(m[_ADDRESS + "ns"]) for m in found["metadatas"]}

    # --- search --------------------------------------------------------------------------------

    def search(self, query: str, scope: Scope, k: int = 10,
               where: Mapping[str, Any] | None = None,
               reader: str | None = None) -> list[SearchHit]:
        """The ``k`` memories inside ``scope`` (and ``where``) that ``reader`` may read closest
        to ``query``; the filter runs inside Chroma, before the top ``k`` is taken."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("the search query must be a non-empty string")
        if not isinstance(k, int) or k < 1:
            raise InvalidInputError("k must be an int of at least 1")
        flt = _all_of(_scope_clauses(scope) + _user_filter(where or {})
                      + self._reader_clauses(reader))
        (vector,) = self.embedder([query], keep=False)  # a query is not kept
        ids = self._ids(flt, limit=self.exact_search + 1)
        if len(ids) > self.exact_search:
            hits = self._nearest(vector, k, flt)
            if len(hits) == k:
                return hits
            ids = self._ids(flt)  # the index missed some of those that exist: rank them all
        return self._ranked(vector, k, flt, ids)

    def _ids(self, flt: dict[str, Any] | None, limit: int | None = None) -> list[str]:
        """The ids of (at most ``limit``) documents that ``flt`` keeps."""
        return _patient(partial(self._docs.get, where=flt, limit=limit, include=[]))["ids"]

    def _nearest(self, vector: np.ndarray, k: int,
                 flt: dict[str, Any] | None) -> list[SearchHit]:
        """The ``k`` documents kept by ``flt`` nearest to ``vector`` as Chroma's vector index
        finds them (it may miss some)."""
        result = _patient(partial(
            self._docs.query, query_embeddings=[list(map(float, vector))], n_results=k,
            where=flt, include=["metadatas", "distances"]))
        return [SearchHit(_entry(m), float(d))
                for m, d in zip(result["metadatas"][0], result["distances"][0], strict=True)]

    def _ranked(self, vector: np.ndarray, k: int, flt: dict[str, Any] | None,
                ids: list[str]) -> list[SearchHit]:
        """The ``k`` documents among ``ids`` nearest to ``vector`` by exact cosine distance.

        The vectors are fetched by id, :attr:`exact_search` at a time (Chroma is slow to
        fetch by id and filter at once); the nearest are then read with ``flt``, so that one
        changed meanwhile is passed over only if ``flt`` no longer keeps it."""
        query = _unit(np.asarray(vector, dtype=np.float64))
        found: list[str] = []
        distances: list[np.ndarray] = []
        for start in range(0, len(ids), self.exact_search):
            got = _patient(partial(self._docs.get, ids=ids[start:start + self.exact_search],
                                   include=["embeddings"]))
            if got["ids"]:
                found += got["ids"]
                distances.append(
                    1.0 - _unit(np.asarray(got["embeddings"], dtype=np.float64)) @ query)
        if not found:
            return []
        flat = np.concatenate(distances)
        order = np.argsort(flat, kind="stable")
        hits: list[SearchHit] = []
        read = 0
        while len(hits) < k and read < len(order):
            nearest = order[read:read + k - len(hits)]
            read += len(nearest)
            metas = _patient(partial(self._docs.get, ids=[found[i] for i in nearest], where=flt,
                                     include=["metadatas"]))
            kept = dict(zip(metas["ids"], metas["metadatas"], strict=True))
            hits += [SearchHit(_entry(kept[found[i]]), float(flat[i])) for i in nearest
                     if found[i] in kept]
        return hits


_T = TypeVar("_T")


def _patient(read: Callable[[], _T], attempts: int = 8) -> _T:
    """``read()``, tried again while Chroma's file is locked: a forget scrubbing the file
    (``VACUUM``) holds it for a moment, and Chroma reports that as an internal error."""
    for attempt in range(attempts - 1):
        try:
            return read()
        except chromadb.errors.InternalError:
            time.sleep(0.02 * 2 ** attempt)
    return read()


def _unit(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (one, or one per row) scaled to length 1; a zero vector stays zero, so that
    its cosine distance to anything is 1."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _carried_vectors(events: Sequence[Event]) -> dict[str, Any]:
    """The vectors that the writes and updates among ``events`` carry, by memory id (the last
    one of each memory)."""
    return {e.memory_id: vector for e in events
            if e.memory_id is not None and e.type in _CONTENT_EVENTS
            and (vector := _carried_vector(e)) is not None}


def _carried_vector(event: Event) -> Any:
    """The vector an event carries, if any; ``None`` for a payload that cannot be read (the
    fold marks its memory damaged, and the text, if any, is embedded)."""
    try:
        data = event.data
    except Exception:  # any payload at all: the projection must go on
        return None
    return data.get("embedding") if isinstance(data, Mapping) else None


def current_collection(client: Any, base: str) -> tuple[str, str | None]:
    """(collection, model id) serving under the name ``base``: ``base`` itself until a
    re-embedding points ``base`` at a new collection."""
    pointer = client.get_or_create_collection(pointer_name(base))
    found = pointer.get(ids=["current"], include=["metadatas"])
    if not found["ids"]:
        return base, None
    meta = found["metadatas"][0]
    return meta["collection"], meta["model"]


def point(client: Any, base: str, collection: str, model_id: str) -> None:
    """Make ``base`` name ``collection`` (embedded by ``model_id``): one upsert, atomic."""
    client.get_or_create_collection(pointer_name(base)).upsert(
        ids=["current"], embeddings=[[0.0]],
        metadatas=[{"collection": collection, "model": model_id}])


def _member_id(change: MembershipChange) -> str:
    """The id of a membership record: JSON of (group, agent), which no two pairs share and
    no other bookkeeping record has."""
    return "member:" + json.dumps([change.group_id, change.agent_id])


def _metadata(entry: MemoryEntry, before: MemoryEntry | None = None) -> dict[str, Any]:
    """A document's metadata for ``entry``; ``before`` is the version the document holds, whose
    keys that ``entry`` lacks are set to ``None`` (Chroma then removes them)."""
    meta: dict[str, Any] = {name: getattr(entry, name) or "" for name in SCOPE_NAMES}
    meta["position"] = entry.position
    meta["version"] = entry.version
    meta["entry"] = base64.b64encode(encode(entry_row(entry))).decode()
    optional = _optional_keys(entry)
    if before is not None:
        meta.update(dict.fromkeys(_optional_keys(before).keys() - optional.keys()))
    meta.update(optional)
    return meta


def _optional_keys(entry: MemoryEntry) -> dict[str, Any]:
    """The metadata keys a document has or lacks by its entry: a flag per principal that may
    read it, and its filterable user metadata."""
    keys: dict[str, Any] = {_READER + p: 1 for p in entry.readable_by}
    metadata = entry.metadata if isinstance(entry.metadata, Mapping) else {}
    for key, value in metadata.items():
        if _filterable(value):
            keys[f"md:{key}"] = value
    return keys | _address_keys(entry)


def _address_keys(entry: MemoryEntry) -> dict[str, Any]:
    """The metadata keys of ``entry``'s key and namespace: the namespace and each of its
    prefixes as text, so that a ``where`` finds a key, or the memories under a prefix."""
    keys: dict[str, Any] = {}
    if entry.key is not None:
        keys[_ADDRESS + "key"] = entry.key
    if entry.key is not None or entry.namespace:
        keys[_ADDRESS + "ns"] = namespace_text(entry.namespace) or _ROOT
    for depth in range(1, len(entry.namespace) + 1):
        keys[f"{_ADDRESS}ns:{depth}"] = namespace_text(entry.namespace[:depth])
    if entry.namespace:
        keys[_ADDRESS + "in"] = True  # in a namespace: what a listing of them all selects
    return keys


_ROOT = "."  # the namespace () as an address (no namespace's text is ".")


def _filterable(value: Any) -> bool:
    """Whether Chroma can keep ``value`` as a metadata value (finite, 64-bit, valid text)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    return False


def _vector_problem(vector: Any, dimensions: int) -> str | None:
    """Why ``vector`` cannot be a document's embedding here, or ``None`` if it can."""
    if isinstance(vector, np.ndarray):
        vector = vector.tolist()
    if isinstance(vector, (str, bytes, bytearray)) or not isinstance(vector, Sequence):
        return f"must be a sequence of numbers, not {type(vector).__name__}"
    for x in vector:
        if isinstance(x, bool) or not isinstance(x, Real):
            return f"must hold numbers only, not {type(x).__name__}"
        if not math.isfinite(float(x)):
            return "must hold finite numbers only"
    if len(vector) != dimensions:
        return f"has {len(vector)} dimensions, not the collection's {dimensions}"
    return None


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
