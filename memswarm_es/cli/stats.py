"""``memswarm stats``: how big the log is, how many live memories each scope holds, and how far
each read model is behind the log."""

from __future__ import annotations

from collections import Counter
from typing import Any

import click

from .options import memswarm_command, settings_of, store_options
from .output import emit_json, say, show_table
from .stores import open_view, operator_memory

SCOPES = ("agent_id", "group_id", "context_id")


def add_commands(group: click.Group) -> None:
    """Register ``stats`` on ``group``."""

    @memswarm_command(group, "stats", "events, memories per scope, read models and their lag")
    @click.option("--also", "others", multiple=True, metavar="URL",
                  help="another read model of this log to report (repeatable), e.g. "
                       "redis://127.0.0.1:6379/0")
    @store_options()
    def stats(others: tuple[str, ...], as_json: bool, **options: Any) -> int:
        settings = settings_of(options)
        agent = settings.get("agent")
        prefix = settings.get("prefix") or "memswarm"
        with operator_memory(settings) as memory:
            head = memory.log.head()
            models = {settings.read_model_url or "the log's own view":
                      memory.read_model.checkpoint()}
            for url in others:
                model = open_view(url, prefix)
                try:
                    models[url] = model.checkpoint()
                finally:
                    model.close()
            entries = (memory.agent(agent) if agent else memory).read_scope()
        per_scope = {scope: dict(Counter(getattr(e, scope) for e in entries
                                         if getattr(e, scope) is not None).most_common())
                     for scope in SCOPES}
        if as_json:
            emit_json({"events": head, "memories": len(entries), "per_scope": per_scope,
                       "read_models": [{"url": url, "checkpoint": c, "lag": max(head - c, 0)}
                                       for url, c in models.items()]})
            return 0
        whose = f" readable by {agent}" if agent else ""
        say(f"{head} events; {len(entries)} live memories{whose}")
        show_table(["read model", "checkpoint", "lag"],
                   [[url, c, max(head - c, 0)] for url, c in models.items()])
        for scope, counts in per_scope.items():
            say("")
            show_table([scope.removesuffix("_id"), "memories"], list(counts.items()))
        return 0
