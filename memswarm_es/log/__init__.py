"""Event log stores: one interface, one module per backend."""

from .base import Digest, EventFilter, EventLog
from .inprocess import InProcessLog
from .sql import SQLEventLog

__all__ = ["Digest", "EventFilter", "EventLog", "InProcessLog", "SQLEventLog"]
