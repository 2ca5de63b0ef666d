"""The one place where the commands open stores: event logs by URL, read models by URL, and the
memory made of both (as the operator, or as ``--agent``). Every command opens through these.

Commands that only read open the log with ``create=False``, so a mistyped path fails with
:class:`~memswarm_es.errors.LogNotFoundError` instead of making an empty log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from projections import open_read_model
from projections.base import ReadModel
from projections.sql import kept_view

from ..agent import AgentMemory
from ..log import SQLEventLog, open_log
from ..log.base import EventLog
from ..memory import SharedMemory
from ..snapshots import snapshot_store_for
from .settings import Settings

__all__ = ["Acting", "memory_of", "open_log", "open_view", "operator_memory", "snapshot_store_for"]

#: What a command acts through: the operator's memory, or an agent's handle on it.
Acting = SharedMemory | AgentMemory


class _Opened(SharedMemory):
    """A memory opened by a command: its view is caught up by the first read that needs it,
    so commands that read only the log (history, audit, verify) never fold it."""

    _catch_up_on_open = False


#: Read models whose keys or tables are named under a prefix (the others take none).
PREFIXED = ("redis://", "rediss://", "sql+")


def open_view(url: str, prefix: str) -> ReadModel:
    """The read model at ``url`` (any URL :func:`projections.open_read_model` takes), its keys
    under ``prefix`` where it has keys."""
    if url.startswith(PREFIXED):
        return open_read_model(url, prefix=prefix)
    return open_read_model(url)


def _view_for(log: EventLog, settings: Settings) -> ReadModel:
    url = settings.read_model_url
    if url is not None:
        return open_view(url, settings.get("prefix") or "memswarm")
    if isinstance(log, SQLEventLog):
        return kept_view(log)  # the SQL view in the log's own database, as SQLiteSharedMemory
    return open_read_model("memory://")


@contextmanager
def operator_memory(settings: Settings, *, create: bool = False,
                    **options: Any) -> Iterator[SharedMemory]:
    """The memory of ``settings``: its log (opened only if it exists, unless ``create``) and
    its read model; closed after the block."""
    log = open_log(settings.log_url, create=create)
    try:
        view = _view_for(log, settings)
    except BaseException:
        log.close()
        raise
    memory = _Opened(log, view, **options)
    try:
        yield memory
    finally:
        memory.close()


@contextmanager
def memory_of(settings: Settings, *, create: bool = False,
              **options: Any) -> Iterator[Acting]:
    """:func:`operator_memory`, as ``settings``' agent if one is set."""
    with operator_memory(settings, create=create, **options) as memory:
        agent = settings.get("agent")
        yield memory.agent(agent) if agent else memory
