"""``memswarm project | replay | reembed``: read models built from the log.

``project`` follows the log and says what changes (the runner's log lines: lease gained or
lost, lagging, caught up, rebuilding; a status line when the status moved), never the same
line on every poll. It exits 1 when its projector stops, so that a supervisor restarts it;
``project --once`` and ``replay`` exit 2 when the view belongs to another log (it is left
untouched; ``replay --take-over`` replaces it).
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import click

from projections.base import ReadModel
from projections.projector import Projector
from projections.runner import Lease, ProjectorRunner, RunnerStatus

from .. import telemetry
from ..errors import InvalidInputError, LogMismatchError, NotSupportedError, StorageError
from ..log.base import EventLog
from . import logs
from .options import memswarm_command, settings_of, store_options
from .output import fail, progress_bar, result, say, throttled
from .settings import Settings
from .stores import open_log, open_view

if TYPE_CHECKING:  # the embedder needs numpy, which only the chroma extra installs
    from projections.embedding import Embedder


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


def _share(done: int, total: int) -> str:
    return f"{done}/{total} events ({100.0 * done / total if total else 100.0:.0f}%)"


def _status_line(status: RunnerStatus) -> str:
    return (f"{'holding the lease' if status.holding else 'standing by'}; checkpoint "
            f"{status.checkpoint}, head {status.head}, lag {status.lag}, rebuilds "
            f"{status.rebuilds}")


def _status(runner: ProjectorRunner) -> RunnerStatus | None:
    try:
        return runner.status()
    except StorageError as exc:
        say(f"status unavailable: {exc}")
        return None


def _into(settings: Settings) -> str:
    """The read model to build: ``--into``, else the Redis server of the settings."""
    url = settings.read_model_url or settings.get("redis_url")
    if not url:
        raise click.UsageError("no read model: give --into redis://host:port/db (or set "
                               "MEMSWARM_READ_MODEL or MEMSWARM_REDIS_URL)")
    return url


def _log_and_view(settings: Settings) -> tuple[EventLog, ReadModel]:
    """The existing log and the read model it projects into; the log closed if the read
    model cannot be opened."""
    log = open_log(settings.log_url, create=False)
    try:
        return log, open_view(_into(settings), settings.get("prefix") or "memswarm")
    except BaseException:
        log.close()
        raise


def _runner(settings: Settings, lease_ttl: float, batch_size: int) -> ProjectorRunner:
    log, view = _log_and_view(settings)
    return ProjectorRunner(log, view, lease_ttl=lease_ttl, batch_size=batch_size)


def _project_once(runner: ProjectorRunner, as_json: bool) -> int:
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
    status = _status(runner)
    if status is not None:
        result(as_json, {"checkpoint": status.checkpoint, "head": status.head,
                         "lag": status.lag, "rebuilds": status.rebuilds},
               f"projected: {_share(status.checkpoint, status.head)}\n{_status_line(status)}")
    return 0


def _follow(runner: ProjectorRunner, report_every: float, as_json: bool) -> int:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runner.stop(timeout=0))
    runner.progress = throttled(lambda done, total: say(f"projected: {_share(done, total)}"),
                                report_every, time.monotonic)
    thread = runner.start()
    shown: RunnerStatus | None = None
    while thread.is_alive():
        thread.join(report_every)
        status = _status(runner) if thread.is_alive() else None
        if status is not None and status != shown:  # a line when something changed only
            shown = status
            result(as_json, {"holding": status.holding, "checkpoint": status.checkpoint,
                             "head": status.head, "lag": status.lag,
                             "rebuilds": status.rebuilds}, _status_line(status))
    if runner.error is not None:  # exit non-zero, so that a supervisor restarts us
        fail("project", f"the projector stopped: {_explain(runner.error)}")
        return 1
    return 0


def _serve_metrics(host: str, port: int, as_json: bool) -> None:
    """Serve ``/metrics`` at ``host:port`` for as long as the command runs."""
    try:
        telemetry.serve_metrics(port, host)
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise InvalidInputError(f"cannot serve metrics on {host}:{port}: {exc}") from None
    if not as_json:
        say(f"metrics at http://{host}:{port}/metrics")


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
    try:
        made: Embedder = getattr(importlib.import_module(module), attr)()
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"cannot load the embedder {spec!r}: {exc}") from None
    return made, str(getattr(made, "model_id", spec))


def _not_loaded(texts: Sequence[str]) -> list[list[float]]:
    raise NotSupportedError("the old model is not loaded by `memswarm reembed`")


def add_commands(group: click.Group) -> None:
    """Register ``project``, ``replay`` and ``reembed`` on ``group``."""
    into = click.option("--into", "--read-model", "read_model", default=None,
                        help="the read model: redis://host:port/db [env MEMSWARM_READ_MODEL, "
                             "else MEMSWARM_REDIS_URL]")
    batch = click.option("--batch-size", type=click.IntRange(min=1), default=1000,
                         show_default=True, help="events per commit")

    @memswarm_command(group, "project", "project a log into a Redis read model, then follow it")
    @into
    @batch
    @click.option("--lease-ttl", type=click.FloatRange(min=0.1), default=10.0,
                  show_default=True, help="seconds before the lease of a dead projector expires")
    @click.option("--report-every", type=click.FloatRange(min=0.1), default=10.0,
                  show_default=True,
                  help="at most one progress or status line this often, and only on change")
    @click.option("--once", is_flag=True, help="catch up, then exit")
    @click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
                  help="serve Prometheus metrics at http://HOST:PORT/metrics (extra metrics)")
    @click.option("--metrics-host", default="127.0.0.1", show_default=True,
                  help="the address --metrics-port listens on")
    @store_options("log", "prefix", "redis_url")
    def project(batch_size: int, lease_ttl: float, report_every: float, once: bool,
                metrics_port: int | None, metrics_host: str, as_json: bool,
                **options: Any) -> int:
        settings = settings_of(options)
        runner = _runner(settings, lease_ttl, batch_size)
        if metrics_port is not None:
            _serve_metrics(metrics_host, metrics_port, as_json)
        if once:
            return _project_once(runner, as_json)
        logs.follow("projections.runner")
        say(f"projecting {settings.log_url} into {_into(settings)} (prefix "
            f"{settings.get('prefix')!r}) as {runner.owner}")
        return _follow(runner, report_every, as_json)

    @memswarm_command(group, "replay", "rebuild a Redis read model from the log")
    @into
    @batch
    @click.option("--take-over", is_flag=True,
                  help="rebuild the view even if it holds another log's view (replacing it)")
    @store_options("log", "prefix", "redis_url")
    def replay(batch_size: int, take_over: bool, as_json: bool, **options: Any) -> int:
        settings = settings_of(options)
        event_log, model = _log_and_view(settings)
        try:
            with progress_bar("replaying") as progress:
                position = Projector(event_log, model, batch_size).replay(
                    progress, take_over=take_over)
            head = event_log.head()
        except LogMismatchError as exc:
            fail("replay", _explain(exc))
            return 2
        finally:
            model.close()
            event_log.close()
        result(as_json, {"position": position, "head": head},
               f"replayed: {_share(position, head)}; read model at position {position}")
        return 0

    @memswarm_command(group, "reembed",
                      "re-embed a Chroma view with another model, no downtime")
    @click.option("--path", "chroma_path", default=None,
                  help="the Chroma directory [env MEMSWARM_CHROMA_PATH; default "
                       "memswarm-chroma]")
    @click.option("--collection", default="memswarm", show_default=True)
    @click.option("--model", required=True, help="'minilm' or 'package.module:factory'")
    @store_options("log")
    def reembed(collection: str, model: str, as_json: bool, **options: Any) -> int:
        settings = settings_of(options)
        new = _reembed(settings, settings.get("chroma_path") or "memswarm-chroma", collection,
                       model, as_json)
        result(as_json, {"collection": collection, "serving": new.name,
                         "position": new.checkpoint()},
               f"switched {collection} to {new.name} at position {new.checkpoint()}")
        return 0


def _reembed(settings: Settings, path: str, collection: str, model: str, as_json: bool) -> Any:
    """Re-embed the Chroma collection at ``path`` with ``model``; the new read model."""
    import chromadb  # installed with projections.chroma, which checked it

    from projections.chroma import ChromaReadModel, current_collection
    from projections.chroma_open import settings as chroma_settings
    from projections.embedding import CachedEmbedder, EmbeddingCache

    from ..memory import SharedMemory
    from ..reembed import reembed

    embedder, model_id = _load_embedder(model)
    client = chromadb.PersistentClient(path, settings=chroma_settings())
    serving, old_model = current_collection(client, collection)
    cache = EmbeddingCache(os.path.join(path, "vectors.db"))
    old = ChromaReadModel(client, CachedEmbedder(_not_loaded, old_model or "?", cache), serving)
    memory = SharedMemory(open_log(settings.log_url, create=False), old, project_inline=False)
    if not as_json:
        say(f"re-embedding {serving} ({old_model or 'first model'}) with {model_id}; "
            "the old collection serves until the switch")
    with progress_bar("re-embedding") as progress:
        return reembed(memory, embedder, model_id, progress)
