"""``memswarm project | replay | reembed``: read models built from the log.

``project`` and ``replay`` exit 2 when the view belongs to another log (it is left untouched;
``replay --take-over`` replaces it); ``project`` exits 1 when its projector stops, so that a
supervisor restarts it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from projections.projector import Projector
from projections.runner import Lease, ProjectorRunner

from ..errors import InvalidInputError, LogMismatchError, NotSupportedError, StorageError
from .args import DEFAULT_LOG, command, log_argument
from .output import fail, progress_bar, progress_lines, say
from .stores import open_log, open_view

if TYPE_CHECKING:  # the embedder needs numpy, which only the chroma extra installs
    from projections.embedding import Embedder

    from .args import Commands


@runtime_checkable
class _TellingLease(Protocol):
    """A lease that can name its holder (Redis's can)."""

    def holder(self) -> str | None: ...


def _holder(lease: Lease) -> str | None:
    return lease.holder() if isinstance(lease, _TellingLease) else None


def _explain(exc: BaseException) -> str:
    if isinstance(exc, LogMismatchError):
        return (f"{exc}; the view belongs to another log (is --log right?). It was left "
                "untouched; `memswarm replay ... --take-over` clears it for this log")
    return f"{type(exc).__name__}: {exc}"


def _print_status(runner: ProjectorRunner) -> None:
    try:
        status = runner.status()
    except StorageError as exc:
        say(f"status unavailable: {exc}")
        return
    say(f"{'holding the lease' if status.holding else 'standing by'}; checkpoint "
        f"{status.checkpoint}, head {status.head}, lag {status.lag}, rebuilds "
        f"{status.rebuilds}")


def _project_once(runner: ProjectorRunner) -> int:
    try:
        while runner.step() is None:
            say(f"waiting for the lease (held by {_holder(runner.lease)})")
            time.sleep(runner.lease.ttl / 3)
        runner.lease.release(runner.owner)
    except LogMismatchError as exc:
        fail("project", _explain(exc))
        return 2
    except StorageError as exc:
        fail("project", str(exc))
        return 1
    _print_status(runner)
    return 0


def _project(args: argparse.Namespace) -> int:
    runner = ProjectorRunner(open_log(args.log, create=False), open_view(args.into, args.prefix),
                             lease_ttl=args.lease_ttl, batch_size=args.batch_size,
                             progress=progress_lines("projected"))
    if args.once:
        return _project_once(runner)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runner.stop(timeout=0))
    say(f"projecting {args.log} into {args.into} (prefix {args.prefix!r}) as {runner.owner}")
    thread = runner.start()
    while thread.is_alive():
        thread.join(args.report_every)
        if thread.is_alive():
            _print_status(runner)
    if runner.error is not None:  # exit non-zero, so that a supervisor restarts us
        fail("project", f"the projector stopped: {_explain(runner.error)}")
        return 1
    return 0


def _replay(args: argparse.Namespace) -> int:
    event_log, model = open_log(args.log, create=False), open_view(args.into, args.prefix)
    say(f"rebuilding {args.into} (prefix {args.prefix!r}) from {args.log}")
    try:
        position = Projector(event_log, model, args.batch_size).replay(
            progress_lines("replayed"), take_over=args.take_over)
    except LogMismatchError as exc:
        fail("replay", _explain(exc))
        return 2
    finally:
        model.close()
        event_log.close()
    say(f"done: read model at position {position}")
    return 0


def _load_embedder(spec: str) -> tuple[Embedder, str]:
    """``minilm`` (the default offline model) or ``package.module:factory`` (called with no
    arguments); returns the embedder and its model id."""
    if spec == "minilm":
        from projections.embedding import MiniLMEmbedding

        embedder = MiniLMEmbedding()
        return embedder, embedder.model_id
    module, _, attr = spec.partition(":")
    if not attr:
        raise InvalidInputError(f"--model takes 'minilm' or 'module:factory', not {spec!r}")
    made: Embedder = getattr(importlib.import_module(module), attr)()
    return made, str(getattr(made, "model_id", spec))


def _not_loaded(texts: Sequence[str]) -> list[list[float]]:
    raise NotSupportedError("the old model is not loaded by `memswarm reembed`")


def _reembed(args: argparse.Namespace) -> int:
    import chromadb

    from projections.chroma import ChromaReadModel, current_collection
    from projections.embedding import CachedEmbedder, EmbeddingCache

    from ..memory import SharedMemory
    from ..reembed import reembed

    embedder, model_id = _load_embedder(args.model)
    client = chromadb.PersistentClient(args.path,
                                       settings=chromadb.Settings(anonymized_telemetry=False))
    serving, old_model = current_collection(client, args.collection)
    cache = EmbeddingCache(os.path.join(args.path, "vectors.db"))
    old = ChromaReadModel(client, CachedEmbedder(_not_loaded, old_model or "?", cache), serving)
    memory = SharedMemory(open_log(args.log, create=False), old, project_inline=False)
    say(f"re-embedding {serving} ({old_model or 'first model'}) with {model_id}; "
        "the old collection serves until the switch")
    new = reembed(memory, embedder, model_id, progress_bar("re-embedding"))
    say(f"switched {args.collection} to {new.name} at position {new.checkpoint()}")
    return 0


def _view_arguments(parser: argparse.ArgumentParser) -> None:
    log_argument(parser)
    parser.add_argument("--into", required=True, help="the read model: redis://host:port/db")
    parser.add_argument("--prefix", default="memswarm",
                        help="key prefix of the read model in Redis (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per commit")


def add_commands(commands: Commands) -> None:
    """Register ``project``, ``replay`` and ``reembed`` on the ``memswarm`` parser."""
    p = command(commands, "project", _project,
                "project a log into a Redis read model, then follow it")
    _view_arguments(p)
    p.add_argument("--lease-ttl", type=float, default=10.0,
                   help="seconds before the lease of a dead projector expires")
    p.add_argument("--report-every", type=float, default=10.0,
                   help="seconds between two status lines")
    p.add_argument("--once", action="store_true", help="catch up, then exit")
    p = command(commands, "replay", _replay, "rebuild a Redis read model from the log")
    _view_arguments(p)
    p.add_argument("--take-over", action="store_true",
                   help="rebuild the view even if it holds another log's view (replacing it)")
    p = command(commands, "reembed", _reembed,
                "re-embed a Chroma view with another model, no downtime")
    p.add_argument("--log", default=DEFAULT_LOG, help="the event log URL")
    p.add_argument("--path", default="memswarm-chroma", help="the Chroma directory")
    p.add_argument("--collection", default="memswarm")
    p.add_argument("--model", required=True, help="'minilm' or 'package.module:factory'")
