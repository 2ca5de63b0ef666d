"""Event log stores: one interface, one module per backend, and :func:`open_log` to choose one
by URL."""

from ..errors import InvalidInputError
from .base import Digest, EventFilter, EventLog
from .inprocess import InMemoryEventLog, InProcessLog
from .sql import SQLEventLog

__all__ = ["Digest", "EventFilter", "EventLog", "InMemoryEventLog", "InProcessLog",
           "SQLEventLog", "open_log"]

MEMORY_URL = "memory://"


def open_log(url: str, *, create: bool = True) -> EventLog:
    """A log from a URL: ``memory://`` (a new log in this process), ``gs://bucket/prefix``
    (prefix ``memswarm/`` if none), or any SQLAlchemy URL (``sqlite:///x.db``,
    ``postgresql+psycopg://...``). ``create=False`` opens an existing log only: where there is
    none, :class:`LogNotFoundError` and nothing is made."""
    if url.startswith("memory:"):
        if url != MEMORY_URL:
            raise InvalidInputError(f"{url!r}: an in-process log is opened as {MEMORY_URL!r}")
        return InMemoryEventLog()
    if url.startswith("gs://"):
        from .gcs import GCSEventLog  # google-cloud-storage: the gcs extra

        bucket, _, prefix = url[len("gs://"):].partition("/")
        if not bucket:
            raise InvalidInputError(f"no bucket in {url!r}")
        return GCSEventLog(bucket, prefix or "memswarm/", create=create)
    return SQLEventLog(url, create=create)
