"""Opening a Chroma read model: the client, the embedder and its vector cache, and the
pointer record that says which collection serves (after a re-embedding)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

from memswarm_es.errors import InvalidInputError, needs_extra

with needs_extra():
    import chromadb
from memswarm_es.events import new_id

from .chroma import ChromaReadModel, check_name, current_collection
from .embedding import CachedEmbedder, Embedder, EmbeddingCache, MiniLMEmbedding

DEFAULT_COLLECTION = "memswarm"
VECTOR_CACHE = "vectors.db"  # in the persistent directory


def settings() -> chromadb.Settings:
    """A client's settings: no telemetry, and no ``.env`` file read (chromadb's settings read
    one from the working directory by default); a fresh object each time: clients change them."""
    return chromadb.Settings(_env_file=None, anonymized_telemetry=False)  # type: ignore[call-arg]


def open_chroma(path: str | None, *, client: Any = None, embedding_function: Any = None,
                model_id: str | None = None, collection: str = DEFAULT_COLLECTION,
                private: bool = False) -> ChromaReadModel:
    """The Chroma read model serving under the name ``collection``.

    ``client`` defaults to a ``PersistentClient`` in the directory ``path`` (made if missing);
    the vector cache is ``path/vectors.db`` (in memory when ``path`` is ``None``, as for a
    server's ``HttpClient``). ``embedding_function`` defaults to the offline
    all-MiniLM-L6-v2; ``model_id`` names it for the cache (default: its ``model_id``, else its
    type's name). The collection served is the one the pointer record names, and must have
    been embedded by that model (else :class:`InvalidInputError`: pass that embedder, or
    reembed). ``private`` opens a new collection of its own beside it instead
    (``<collection>-local-<id>``), for a view that its owner drops.
    """
    check_name(collection)
    if path is not None:
        os.makedirs(path, exist_ok=True)
    if client is None:
        if path is None:
            raise InvalidInputError("open_chroma needs a path or a client")
        client = chromadb.PersistentClient(path, settings=settings())
    embedder: Embedder = embedding_function or MiniLMEmbedding()
    name = model_id or str(getattr(embedder, "model_id", type(embedder).__name__))
    serving, model = current_collection(client, collection)
    if model is not None and model != name:
        raise InvalidInputError(f"collection {serving!r} was embedded by {model!r}, not "
                                f"{name!r}: pass that embedder, or reembed")
    cache = EmbeddingCache(":memory:" if path is None else os.path.join(path, VECTOR_CACHE))
    return ChromaReadModel(client, CachedEmbedder(embedder, name, cache),
                           f"{collection}-local-{new_id()}" if private else serving)


def open_url(url: str, **options: Any) -> ChromaReadModel:
    """``chroma:///path?collection=C`` (a persistent directory; ``chroma:////abs/path``) or
    ``chroma+http://host:port?collection=C`` (a server); ``options`` as for
    :func:`open_chroma`."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    collection = query.pop("collection", DEFAULT_COLLECTION)
    if query:
        raise InvalidInputError(f"{url}: unknown parameter(s) {sorted(query)}")
    if parts.scheme == "chroma+http":
        if not parts.hostname:
            raise InvalidInputError(f"{url}: name the server: chroma+http://host:port")
        client = chromadb.HttpClient(host=parts.hostname, port=parts.port or 8000,
                                     settings=settings())
        return open_chroma(None, client=client, collection=collection, **options)
    path = parts.path[1:]  # what follows chroma:/// (as in sqlite:///path)
    if parts.netloc or not path:
        raise InvalidInputError(f"{url}: name a directory: chroma:///path")
    return open_chroma(path, collection=collection, **options)
