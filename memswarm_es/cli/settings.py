"""Settings of the ``memswarm`` commands (and of anything else started from a shell, such as an
MCP server): each comes from its flag, else its environment variable, else the config file,
else its default.

The config file is TOML: ``--config PATH``, else ``$MEMSWARM_CONFIG``, else ``memswarm.toml``
in the working directory if there is one. Its keys are the names in :data:`SETTINGS`::

    log = "swarm.db"                       # a plain path is a SQLite file
    read_model = "redis://127.0.0.1:6379/0"
    prefix = "swarm"
    agent = "scout"

This module is pure apart from reading that one file: no store is opened here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy.engine
import sqlalchemy.exc

from ..errors import InvalidInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the 3.10 fallback
    import tomli as tomllib

CONFIG_ENV = "MEMSWARM_CONFIG"
CONFIG_FILE = "memswarm.toml"


@dataclass(frozen=True)
class Setting:
    """One setting: its environment variable, default and meaning."""

    env: str
    default: str | None
    help: str


#: Every setting, by the name its config key and flag (``--read-model`` for ``read_model``) use.
SETTINGS: dict[str, Setting] = {
    "log": Setting("MEMSWARM_LOG_URL", "sqlite:///memswarm.db",
                   "the event log: a SQLite path, sqlite:///path.db, any SQLAlchemy URL, "
                   "gs://bucket/prefix or memory://"),
    "read_model": Setting("MEMSWARM_READ_MODEL", None,
                          "the read model: redis://host:port/db, chroma:///path, memory://; "
                          "default: the SQL view in the log's database (or memory:// for GCS)"),
    "redis_url": Setting("MEMSWARM_REDIS_URL", None,
                         "the Redis server `project` and `replay` build into, when "
                         "read_model is not a Redis URL"),
    "prefix": Setting("MEMSWARM_PREFIX", "memswarm", "key prefix of the read model"),
    "agent": Setting("MEMSWARM_AGENT_ID", None, "act as this agent (its permissions apply)"),
    "chroma_path": Setting("MEMSWARM_CHROMA_PATH", "memswarm-chroma",
                           "the Chroma directory `reembed` works on"),
}


@dataclass(frozen=True)
class Settings:
    """Resolved settings; :meth:`get` names one, ``None`` if it has no value anywhere."""

    values: Mapping[str, str | None]
    config_path: Path | None = None

    def get(self, name: str) -> str | None:
        return self.values[name]

    @property
    def log_url(self) -> str:
        """The log's URL (a plain path made a SQLite URL)."""
        return log_url(self.values["log"] or "")

    @property
    def read_model_url(self) -> str | None:
        return self.values["read_model"]


def resolve(flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None,
            config: str | None = None, cwd: Path | None = None) -> Settings:
    """The settings from ``flags`` (``None`` where not given), then ``environ`` (the process's
    environment by default), then the config file, then the defaults."""
    env = os.environ if environ is None else environ
    path = config_file(config, env, cwd or Path.cwd())
    from_file = read_config(path) if path is not None else {}
    values: dict[str, str | None] = {}
    for name, setting in SETTINGS.items():
        found = flags.get(name)
        if found is None:
            found = env.get(setting.env) or from_file.get(name) or setting.default
        values[name] = found
    return Settings(values, path)


def config_file(given: str | None, environ: Mapping[str, str], cwd: Path) -> Path | None:
    """The config file to read: the one named (it must exist), or ``memswarm.toml`` here."""
    named = given or environ.get(CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise InvalidInputError(f"no config file {named!r}")
        return path
    default = cwd / CONFIG_FILE
    return default if default.is_file() else None


def read_config(path: Path) -> dict[str, str]:
    """The settings in the TOML file at ``path``: known names, string values."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"cannot read the config file {path}: {exc}") from None
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise InvalidInputError(f"{path}: unknown settings {', '.join(unknown)} "
                                f"(known: {', '.join(SETTINGS)})")
    wrong = sorted(k for k, v in data.items() if not isinstance(v, str))
    if wrong:
        raise InvalidInputError(f"{path}: {', '.join(wrong)} must be a string")
    return data


def log_url(text: str) -> str:
    """A log URL: ``memory://``, ``gs://...``, a SQLAlchemy URL whose database kind is known,
    or a plain path (a SQLite file). :class:`InvalidInputError` otherwise."""
    if not text:
        raise InvalidInputError("no log given (--log, MEMSWARM_LOG_URL or the config file)")
    if "://" not in text:
        return f"sqlite:///{text}"
    if text.startswith(("memory://", "gs://")):
        return text
    try:
        sqlalchemy.engine.make_url(text).get_dialect()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as exc:
        raise InvalidInputError(f"{text!r} is not a log URL ({exc}); use a SQLite path, "
                                "sqlite:///path.db, postgresql+psycopg://..., gs://bucket/prefix "
                                "or memory://") from None
    return text
