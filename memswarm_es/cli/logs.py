"""Where the commands' log lines go: stderr, warnings and errors by default; a long-running
command (``project``) also shows the INFO lines of the loggers it follows. ``memswarm
--log-format json`` (or ``MEMSWARM_LOG_FORMAT=json``) writes each line as one JSON object, its
stable event name and fields as keys (:class:`memswarm_es.telemetry.logs.JSONFormatter`)."""

from __future__ import annotations

import logging

from ..telemetry.logs import JSONFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The values of ``--log-format``.
FORMATS = ("text", "json")


#: The handler :func:`configure` gave the root logger (none where logging was set up already).
_handlers: list[logging.Handler] = []


def configure() -> None:
    """Warnings and errors of every logger, on stderr (unless logging was set up already)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
        _handlers.append(handler)


def use_format(name: str) -> None:
    """Write the lines as ``name`` says: ``text`` (one readable line) or ``json``."""
    formatter = JSONFormatter() if name == "json" else logging.Formatter(FORMAT)
    for handler in _handlers:
        handler.setFormatter(formatter)


def follow(*names: str) -> None:
    """Also the INFO lines of the loggers ``names`` (changes of state, not polls)."""
    for name in names:
        logging.getLogger(name).setLevel(logging.INFO)
