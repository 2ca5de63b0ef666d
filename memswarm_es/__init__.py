"""MemSwarm: an event-sourced shared memory for multi-agent systems."""

from projections.fold import MemoryEntry

from .errors import (
    ConflictError,
    InvalidInputError,
    MemoryNotFoundError,
    MemSwarmError,
    VersionConflictError,
)
from .events import Event, NewEvent
from .log import EventLog, InProcessLog, SQLEventLog
from .memory import (
    HybridMemory,
    InMemorySharedMemory,
    MemoryVersion,
    SharedMemory,
    SQLiteSharedMemory,
)
from .scopes import Scope

__all__ = [
    "ConflictError",
    "Event",
    "EventLog",
    "HybridMemory",
    "InMemorySharedMemory",
    "InProcessLog",
    "InvalidInputError",
    "MemSwarmError",
    "MemoryEntry",
    "MemoryNotFoundError",
    "MemoryVersion",
    "NewEvent",
    "SQLEventLog",
    "SQLiteSharedMemory",
    "Scope",
    "SharedMemory",
    "VersionConflictError",
]
