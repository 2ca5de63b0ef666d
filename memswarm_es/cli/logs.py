"""Where the commands' log lines go: stderr, warnings and errors by default; a long-running
command (``project``) also shows the INFO lines of the loggers it follows. The one place to
add other formats (``--log-format json``) later."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure() -> None:
    """Warnings and errors of every logger, on stderr."""
    logging.basicConfig(level=logging.WARNING, format=FORMAT)


def follow(*names: str) -> None:
    """Also the INFO lines of the loggers ``names`` (changes of state, not polls)."""
    for name in names:
        logging.getLogger(name).setLevel(logging.INFO)
