"""Read models chosen by URL: :func:`open_read_model`.

=============================================  ===============================================
``memory://``                                  :class:`~projections.in_memory.InMemoryReadModel`
``redis://host:port/db?prefix=P``,             :class:`~projections.redis.RedisReadModel`
``rediss://...`` (TLS)                         (keys under ``P``, default ``memswarm``)
``chroma:///path?collection=C``                :class:`~projections.chroma.ChromaReadModel` in
                                               a persistent directory (``path`` as SQLAlchemy
                                               reads ``sqlite:///path``: ``chroma:////abs``)
``chroma+http://host:port?collection=C``       the same on a Chroma server
``sql+<log url>``: ``sql+sqlite:///swarm.db``, :class:`~projections.sql.SQLReadModel` in the
``sql+postgresql+psycopg://...``               database of the log at ``<log url>`` (tables
                                               ``P_view_*``, ``P`` the option ``prefix``,
                                               default ``memswarm``), kept by that log
=============================================  ===============================================

A backend is a module with ``open_url(url, **options) -> ReadModel``, named below by the URL
schemes it opens (``sql`` stands for every ``sql+<dialect>``); it is imported when a URL names
it, so a backend's client library is needed only by those who use it. A new backend is its
module plus one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from memswarm_es.errors import InvalidInputError

from .base import ReadModel

#: URL scheme -> the module (in this package) whose ``open_url`` opens it.
BACKENDS = {
    "memory": "in_memory",
    "redis": "redis",
    "rediss": "redis",
    "chroma": "chroma_open",
    "chroma+http": "chroma_open",
    "sql": "sql",  # sql+sqlite, sql+postgresql+psycopg, ...: a view in a SQL log's database
}


def open_read_model(url: str, **options: Any) -> ReadModel:
    """The read model at ``url`` (see the module docstring); ``options`` go to its backend
    (e.g. ``expire_after`` for Redis, ``embedding_function`` and ``model_id`` for Chroma).
    Raises :class:`InvalidInputError` for a URL of no known scheme."""
    scheme, found, _ = url.partition("://") if isinstance(url, str) else ("", "", "")
    if scheme.startswith("sql+"):
        scheme = "sql"
    if not found or scheme not in BACKENDS:
        raise InvalidInputError(f"no read model for {url!r}: use a URL starting with one of "
                                f"{', '.join(s + '://' for s in BACKENDS)}")
    module = importlib.import_module(f"{__package__}.{BACKENDS[scheme]}")
    opener: Callable[..., ReadModel] = module.open_url
    return opener(url, **options)
