"""Copying a log to another store, events as they are: positions, times, payloads and hashes.

The target verifies every event against its own chain as it imports it, so a copy checks
itself; digests taken on one store hold on the other. A copy is resumable: it goes on from the
target's head after checking that the target's last event is the source's event there. An empty
target takes the source's identity, so read models may follow either.

A copy never keeps content the source forgot: after importing, every payload in the target whose
event the source has redacted, or whose memory has a forget event, is redacted in the target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..errors import ChainBrokenError
from ..events import Event, EventType
from .base import EventFilter, EventLog


def copy_log(source: EventLog, target: EventLog, batch_size: int = 1000,
             progress: Callable[[int, int], None] | None = None) -> int:
    """Copy the events of ``source`` that ``target`` lacks; return how many were copied."""
    start, end = target.head(), source.head()
    if start > end:
        raise ChainBrokenError(f"the target (head {start}) is ahead of the source (head {end})",
                             start)
    if start and target.read(start - 1, 1)[0].hash != source.read(start - 1, 1)[0].hash:
        raise ChainBrokenError(f"the target differs from the source at position {start}", start)
    if start == 0:
        target.adopt_identity(source.identity())
    copied = 0
    forgets: list[Event] = []
    for batch in source.iter_events(start, batch_size, until=end):
        target.import_events(batch)
        forgets += [e for e in batch if e.type == EventType.MEMORY_FORGOTTEN]
        copied += len(batch)
        if progress:
            progress(start + copied, end)
    scrub_copy(source, target, start, forgets, batch_size)
    return copied


def scrub_copy(source: EventLog, target: EventLog, until: int, forgets: list[Event],
               batch_size: int = 1000) -> int:
    """Redact in ``target`` what the source forgot: payloads at positions up to ``until`` (the
    part copied before) that the source has redacted since, and every earlier payload of a
    memory with a forget event (``forgets`` found in the new part, the others in the old).
    Returns how many payloads were removed."""
    doomed: set[int] = set()
    forgets = list(forgets)
    for mine, theirs in zip(_events(target, until, batch_size), _events(source, until, batch_size),
                            strict=True):
        if mine.position != theirs.position or mine.hash != theirs.hash:
            raise ChainBrokenError(f"the target differs from the source at position "
                                 f"{mine.position}", mine.position)
        if mine.type == EventType.MEMORY_FORGOTTEN:
            forgets.append(mine)
        if mine.payload is not None and theirs.payload is None:
            doomed.add(mine.position)
    for forget in forgets:
        assert forget.memory_id is not None
        doomed.update(e.position for e in target.query(EventFilter(memory_id=forget.memory_id),
                                                       limit=None)
                      if e.position < forget.position and e.payload is not None)
    return target.redact(sorted(doomed)) if doomed or forgets else 0


def _events(log: EventLog, until: int, batch_size: int) -> Iterator[Event]:
    if until:
        for batch in log.iter_events(0, batch_size, until=until):
            yield from batch
