"""The options commands share, as Click decorators, and the types of their values.

:func:`store_options` gives a command ``--log``, ``--read-model``, ``--prefix``, ``--agent``
and ``--config``; :func:`settings_of` resolves them (flag, then environment, then config file:
:mod:`.settings`). Every command gets ``--json`` from :func:`memswarm_command`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import click

from ..log.base import Digest
from .settings import SETTINGS, Settings, resolve

F = TypeVar("F", bound=Callable[..., Any])

#: The settings a store command takes as flags (``--read-model`` sets ``read_model``).
STORE_SETTINGS = ("log", "read_model", "prefix", "agent")


def memswarm_command(group: click.Group, name: str, help_text: str) -> Callable[[F], F]:
    """Register the decorated function as command ``name`` of ``group``, with ``--json``."""

    def register(fn: F) -> F:
        fn = click.option("--json", "as_json", is_flag=True,
                          help="print the result as JSON, for scripts")(fn)
        group.command(name, help=help_text, short_help=help_text)(fn)
        return fn

    return register


def store_options(*names: str) -> Callable[[F], F]:
    """``--config`` and a flag per setting in ``names`` (default: :data:`STORE_SETTINGS`)."""

    def add(fn: F) -> F:
        for name in reversed(names or STORE_SETTINGS):
            setting = SETTINGS[name]
            fn = click.option(f"--{name.replace('_', '-')}", name, default=None,
                              help=f"{setting.help} [env {setting.env}]")(fn)
        return click.option("--config", "config", default=None,
                            help="a TOML file of settings [env MEMSWARM_CONFIG; default "
                                 "./memswarm.toml if present]")(fn)

    return add


def settings_of(options: dict[str, Any]) -> Settings:
    """The settings of a command: its flags (taken out of ``options``), the environment, the
    config file."""
    config = options.pop("config", None)
    flags = {name: options.pop(name) for name in SETTINGS if name in options}
    return resolve(flags, config=config)


def scope_options(fn: F) -> F:
    """``--agent-id``, ``--group-id``, ``--context-id``: a scope."""
    for name in ("context_id", "group_id", "agent_id"):
        fn = click.option(f"--{name.replace('_', '-')}", name, default=None,
                          help=f"the scope's {name.removesuffix('_id')}")(fn)
    return fn


class _Position(click.ParamType):
    name = "position"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        try:
            found = int(value)
        except (TypeError, ValueError):
            found = -1
        if found < 0:
            self.fail(f"{value!r} is not a log position (0 or more)", param, ctx)
        return found


class _Time(click.ParamType):
    name = "time"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not an ISO time such as 2026-11-25T10:30 or "
                      "2026-11-25T10:30+01:00", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class _Digest(click.ParamType):
    name = "digest"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Digest:
        position, _, hex_hash = str(value).partition(":")
        try:
            digest: Digest | None = Digest(int(position), bytes.fromhex(hex_hash))
        except ValueError:
            digest = None
        if digest is None or digest.position < 0 or len(digest.hash) != 32:
            self.fail(f"{value!r} is not a digest: POSITION:HEXHASH (64 hex digits), as "
                      "verify prints it", param, ctx)
        return digest


class _JSONObject(click.ParamType):
    name = "json"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            found = json.loads(value)
        except ValueError as exc:
            self.fail(f"{value!r} is not JSON: {exc}", param, ctx)
        if not isinstance(found, dict):
            self.fail(f"{value!r} is not a JSON object ({{...}})", param, ctx)
        return found


POSITION = _Position()
TIME = _Time()
DIGEST = _Digest()
JSON_OBJECT = _JSONObject()
