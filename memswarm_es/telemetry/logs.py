"""Structured log lines through the standard :mod:`logging` module.

MemSwarm's lines that tell an operator something (a projector runner's changes of state, a
rebuild, a damaged event) carry a stable event name and their facts as fields, in ``extra=``:
``logger.info("%s: caught up: ...", owner, extra=event("projection.caught_up", owner=owner,
checkpoint=12))``. The message stays a sentence for people; :class:`JSONFormatter` writes one
JSON object per line for machines, with ``event`` and the fields as keys.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

#: The attributes every :class:`logging.LogRecord` has: anything else on a record came from
#: ``extra=`` and is a field of the line.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}

#: The event name of a line that gave none (a library's, a plain ``logger.warning``).
PLAIN = "log"


def event(name: str, **fields: Any) -> dict[str, Any]:
    """The ``extra=`` of a log line: its event name and fields (names that are not attributes
    of a log record: ``owner``, ``checkpoint``, ``reason``...)."""
    return {"event": name, **fields}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``event``,
    ``message``, the fields given in ``extra=``, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", PLAIN),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)
