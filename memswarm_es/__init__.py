"""MemSwarm: an event-sourced shared memory for multi-agent systems.

This package holds two floors of the house: the values and write side (``errors``, ``scopes``,
``events``, ``log``) at the bottom, and history, facade and command line above ``projections``.
Importing any bottom-floor module runs this file first, so it must not import the upper floors
at load time: ``projections`` (which builds on ``memswarm_es.events``) would then import itself
half-made. The facade's names are therefore loaded on first use (PEP 562); no module imports
upward, and ``tests/test_architecture.py`` checks it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from .errors import (
    ConflictError,
    InvalidInputError,
    MemoryNotFoundError,
    MemSwarmError,
    VersionConflictError,
)
from .events import Event, NewEvent
from .scopes import Scope

try:
    __version__ = importlib.metadata.version("memswarm-es")
except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
    __version__ = "0+unknown"

_LAZY = {
    "EventLog": "memswarm_es.log",
    "InMemoryEventLog": "memswarm_es.log",
    "InProcessLog": "memswarm_es.log",
    "open_log": "memswarm_es.log",
    "SQLEventLog": "memswarm_es.log",
    "ChromaSharedMemory": "memswarm_es.memory",
    "GCSSharedMemory": "memswarm_es.memory",
    "HybridMemory": "memswarm_es.memory",
    "InMemorySharedMemory": "memswarm_es.memory",
    "MemoryVersion": "memswarm_es.audit",
    "SharedMemory": "memswarm_es.memory",
    "SQLiteSharedMemory": "memswarm_es.memory",
    "RedisSharedMemory": "memswarm_es.memory",
    "PostgresSharedMemory": "memswarm_es.memory",
    "AsyncSharedMemory": "memswarm_es.aio",
    "MemoryEntry": "projections.fold",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memswarm_es' has no attribute {name!r}")


__all__ = [
    "ConflictError",
    "Event",
    "InvalidInputError",
    "MemSwarmError",
    "MemoryNotFoundError",
    "NewEvent",
    "Scope",
    "VersionConflictError",
    "__version__",
    *_LAZY,
]
