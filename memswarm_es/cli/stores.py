"""The one place where the commands open stores: event logs by URL, read models by URL, and
the snapshot store of a log. Every command opens through these names.

Commands that only read a log open it with ``create=False``, so a mistyped URL fails with
:class:`~memswarm_es.errors.LogNotFoundError` instead of making an empty log.
"""

from __future__ import annotations

from projections import open_read_model
from projections.base import ReadModel

from ..log import open_log
from ..snapshots import snapshot_store_for

__all__ = ["open_log", "open_view", "snapshot_store_for"]


def open_view(url: str, prefix: str) -> ReadModel:
    """The read model at ``url`` (``redis://host:port/db``, or any URL
    :func:`projections.open_read_model` takes), its keys under ``prefix``."""
    return open_read_model(url, prefix=prefix)
