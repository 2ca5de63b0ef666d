"""What the MCP server is told: flags, or the environment where a flag is not given, and the
shared memory they open.

==========================  ======================  ===========================================
flag                        environment             meaning
==========================  ======================  ===========================================
``--log URL``               ``MEMSWARM_LOG_URL``    the event log (default ``sqlite:///memswarm.db``)
``--read-model URL``        ``MEMSWARM_READ_MODEL`` ``memory``, ``redis://...``, ``chroma:PATH``
                                                    or any read model URL; default: the SQL view
                                                    a SQL log keeps, else ``memory``
``--agent-id ID``           ``MEMSWARM_AGENT_ID``   the agent a stdio connection acts as
``--read-only``             ``MEMSWARM_READ_ONLY``  register no tool that writes
``--allow-forget``          ``MEMSWARM_ALLOW_FORGET`` register ``forget_memory``
``--http HOST:PORT``        ``MEMSWARM_HTTP``       serve streamable HTTP instead of stdio
``--tokens-file PATH``      ``MEMSWARM_TOKENS_FILE`` HTTP bearer tokens, ``token agent_id`` a line
(none: keep tokens off      ``MEMSWARM_TOKENS``     HTTP bearer tokens, ``tok1=Agent1,tok2=Agent2``
command lines)
==========================  ======================  ===========================================
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from projections import open_read_model
from projections.base import ReadModel
from projections.sql import kept_view

from ...errors import InvalidInputError
from ...log import open_log
from ...log.base import EventLog
from ...log.sql import SQLEventLog
from ...memory import SharedMemory
from ...scopes import check_id

DEFAULT_LOG = "sqlite:///memswarm.db"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Config:
    """Everything the server needs to know; ``tokens`` maps each HTTP bearer token to the
    agent it names."""

    log_url: str = DEFAULT_LOG
    read_model: str | None = None
    agent_id: str | None = None
    read_only: bool = False
    allow_forget: bool = False
    http: tuple[str, int] | None = None
    tokens: Mapping[str, str] = field(default_factory=dict)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memswarm mcp", description="Serve a shared memory over the Model Context Protocol "
        "(stdio by default). Every flag may be given in the environment instead.")
    parser.add_argument("--log", help="the event log URL [MEMSWARM_LOG_URL] (default: "
                        f"{DEFAULT_LOG})")
    parser.add_argument("--read-model", help="memory | redis://... | chroma:PATH | any read "
                        "model URL [MEMSWARM_READ_MODEL] (default: the SQL view of a SQL log)")
    parser.add_argument("--agent-id", help="the agent a stdio connection acts as "
                        "[MEMSWARM_AGENT_ID]")
    parser.add_argument("--read-only", action="store_true", default=None,
                        help="no tool that writes [MEMSWARM_READ_ONLY]")
    parser.add_argument("--allow-forget", action="store_true", default=None,
                        help="offer forget_memory [MEMSWARM_ALLOW_FORGET]")
    parser.add_argument("--http", metavar="HOST:PORT",
                        help="serve streamable HTTP at http://HOST:PORT/mcp [MEMSWARM_HTTP]")
    parser.add_argument("--tokens-file", help="bearer tokens, 'token agent_id' per line "
                        "[MEMSWARM_TOKENS_FILE]; or MEMSWARM_TOKENS='tok1=Agent1,tok2=Agent2'")
    return parser


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """The configuration in ``argv`` and ``environ`` (a flag wins over its variable).
    Raises :class:`InvalidInputError` for a value that cannot be used (``argparse`` exits
    on unknown flags)."""
    args = _parser().parse_args(list(argv))

    def given(flag: str | None, name: str) -> str | None:
        return flag if flag is not None else (environ.get(name) or None)

    agent_id = given(args.agent_id, "MEMSWARM_AGENT_ID")
    http = given(args.http, "MEMSWARM_HTTP")
    tokens_file = given(args.tokens_file, "MEMSWARM_TOKENS_FILE")
    tokens = {**_tokens_text(environ.get("MEMSWARM_TOKENS", "")),
              **(_tokens_file(Path(tokens_file)) if tokens_file else {})}
    config = Config(
        log_url=given(args.log, "MEMSWARM_LOG_URL") or DEFAULT_LOG,
        read_model=given(args.read_model, "MEMSWARM_READ_MODEL"),
        agent_id=None if agent_id is None else check_id(agent_id, "agent id"),
        read_only=args.read_only or _flag(environ, "MEMSWARM_READ_ONLY"),
        allow_forget=args.allow_forget or _flag(environ, "MEMSWARM_ALLOW_FORGET"),
        http=None if http is None else _host_port(http),
        tokens=tokens,
    )
    if config.http is None and config.agent_id is None:
        raise InvalidInputError("name the agent this server acts as: --agent-id or "
                                "MEMSWARM_AGENT_ID")
    if config.http is not None and not config.tokens:
        raise InvalidInputError("over HTTP every agent needs a bearer token: give "
                                "MEMSWARM_TOKENS_FILE or MEMSWARM_TOKENS")
    return config


def _flag(environ: Mapping[str, str], name: str) -> bool:
    text = environ.get(name, "").strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise InvalidInputError(f"{name}={text!r}: use 1 or 0")


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"--http {text!r}: use HOST:PORT, e.g. 127.0.0.1:8765")
    return host.strip("[]"), int(port)


def _tokens_text(text: str) -> dict[str, str]:
    """``tok1=Agent1,tok2=Agent2`` as a token -> agent map (split at the last ``=``: a token
    may hold ``=``, as base64 padding does; an agent id may not)."""
    pairs = [item.strip().rpartition("=") for item in text.split(",") if item.strip()]
    return _token_map([(token.strip(), agent.strip()) for token, _, agent in pairs],
                      "MEMSWARM_TOKENS")


def _tokens_file(path: Path) -> dict[str, str]:
    """A file of ``token agent_id`` lines (blank lines and ``#`` comments skipped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the tokens file {str(path)!r}: {exc}") from exc
    rows = [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return _token_map([(row[0], " ".join(row[1:])) for row in rows], str(path))


def _token_map(pairs: Sequence[tuple[str, str]], where: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for token, agent in pairs:
        if not token or not agent:
            raise InvalidInputError(f"{where}: each token needs an agent id")
        if tokens.get(token, agent) != agent:
            raise InvalidInputError(f"{where}: one token names two agents")
        tokens[token] = check_id(agent, "agent id")
    return tokens


def read_model_url(name: str) -> str:
    """The read model URL ``MEMSWARM_READ_MODEL`` names: ``memory`` and ``chroma:PATH`` are
    short for ``memory://`` and ``chroma:///PATH``; any other URL is passed on."""
    if name == "memory":
        return "memory://"
    if name.startswith("chroma:") and not name.startswith("chroma://"):
        return f"chroma:///{name[len('chroma:'):]}"  # chroma:/abs -> chroma:////abs
    return name


def open_memory(config: Config) -> SharedMemory:
    """The shared memory ``config`` names: its log, and its read model (caught up)."""
    log = open_log(config.log_url)
    try:
        return SharedMemory(log, _read_model(config, log))
    except BaseException:
        log.close()
        raise


def _read_model(config: Config, log: EventLog) -> ReadModel:
    if config.read_model is None and isinstance(log, SQLEventLog):
        return kept_view(log)
    return open_read_model(read_model_url(config.read_model or "memory"))
