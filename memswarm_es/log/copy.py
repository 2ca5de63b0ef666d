"""Copying a log to another store, events as they are: positions, times, payloads and hashes.

The target verifies every event against its own chain as it imports it, so a copy checks
itself; digests taken on one store hold on the other. A copy is resumable: it goes on from the
target's head after checking that the target's last event is the source's event there.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import IntegrityError, InvalidInputError
from .base import EventLog


def copy_log(source: EventLog, target: EventLog, batch_size: int = 1000,
             progress: Callable[[int, int], None] | None = None) -> int:
    """Copy the events of ``source`` that ``target`` lacks; return how many were copied."""
    start, end = target.head(), source.head()
    if start > end:
        raise IntegrityError(f"the target (head {start}) is ahead of the source (head {end})",
                             start)
    if start and target.read(start - 1, 1)[0].hash != source.read(start - 1, 1)[0].hash:
        raise IntegrityError(f"the target differs from the source at position {start}", start)
    copied = 0
    for batch in source.iter_events(start, batch_size, until=end):
        target.import_events(batch)
        copied += len(batch)
        if progress:
            progress(start + copied, end)
    return copied


def open_log(url: str) -> EventLog:
    """A log from a URL: ``gs://bucket/prefix`` or any SQLAlchemy URL (``sqlite:///x.db``)."""
    if url.startswith("gs://"):
        from .gcs import GCSEventLog

        bucket, _, prefix = url[len("gs://"):].partition("/")
        if not bucket:
            raise InvalidInputError(f"no bucket in {url!r}")
        return GCSEventLog(bucket, prefix or "memswarm/")
    from .sql import SQLEventLog

    return SQLEventLog(url)
