"""The ``memswarm`` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from projections.fold import MemoryEntry

from .cli_audit import add_commands as add_audit_commands
from .errors import (
    InvalidInputError,
    LogMismatchError,
    MemSwarmError,
    NotSupportedError,
    StorageError,
)
from .log.sql import SQLEventLog
from .memory import SQLiteSharedMemory

if TYPE_CHECKING:
    from projections.redis import RedisReadModel
    from projections.runner import ProjectorRunner


def _show(title: str, entries: Sequence[MemoryEntry]) -> None:
    print(f"\n  {title}")
    if not entries:
        print("    (nothing)")
    for e in entries:
        scope = "/".join(p or "-" for p in (e.agent_id, e.group_id, e.context_id))
        print(f"    #{e.position:<3} v{e.version}  [{scope}]  {e.value!r}")


def demo(db_path: str) -> None:
    """A short story of three agents sharing memory through one SQLite log."""
    say = print
    say(f"MemSwarm demo: three agents share one event log at {db_path}\n")
    mem = SQLiteSharedMemory(db_path)

    say("1. Scout and analyst (group 'research') and a planner (group 'ops') write memories.")
    finding = mem.write_scope("The bridge on route 7 is closed",
                              metadata={"agent_id": "scout", "group_id": "research",
                                        "confidence": 0.7}, context_id="mission-42")
    mem.write_scope("Fuel reserves at 60%", metadata={"agent_id": "planner", "group_id": "ops"},
                    context_id="mission-42")
    mem.write_scope("Weather clear until Friday",
                    metadata={"agent_id": "analyst", "group_id": "research"})
    _show("research group reads its shared memory:", mem.read_scope(group_id="research"))
    _show("everyone on mission-42 reads that context:", mem.read_scope(context_id="mission-42"))
    _show("the scout reads only its own memories:", mem.read_scope(agent_id="scout"))

    say("\n2. The analyst corrects the scout's finding, naming the version it read (v1).")
    mem.update(finding, "The bridge on route 7 is closed; detour via route 9",
               metadata={"confidence": 0.95}, expected_version=1, actor="analyst")
    say("   The scout, still holding v1, tries its own update and is refused:")
    try:
        mem.update(finding, "Bridge closed (scout)", expected_version=1, actor="scout")
    except Exception as exc:
        say(f"   -> {type(exc).__name__}: {exc}")

    say("\n3. The planner deletes its fuel note (a tombstone: the log keeps it).")
    fuel = mem.read_scope(agent_id="planner")[0]
    mem.delete(fuel.memory_id, actor="planner")
    _show("mission-42 now:", mem.read_scope(context_id="mission-42"))

    say("\n4. History of the scout's finding, straight from the log:")
    for v in mem.history(finding):
        say(f"    v{v.version} {v.type:<15} by {v.actor:<8} at #{v.position}: {v.value!r}")

    say("\n5. Replay: the read model is thrown away and rebuilt from the log.")
    before = [e.as_dict() for e in mem.read_scope()]
    position = mem.replay()
    after = [e.as_dict() for e in mem.read_scope()]
    say(f"   replayed {position} events; view identical to before: {before == after}")

    say("\n6. Time travel and audit: what did the swarm know at position 3, and who wrote what?")
    _show("mission-42 as it stood at position 3:", mem.as_of(3).read_scope(context_id="mission-42"))
    say("\n  everything the analyst wrote, from the log:")
    for e in mem.audit(actor="analyst").events:
        say(f"    #{e.position} {e.type} by {e.actor} at {e.recorded_at:%H:%M:%S.%f}")

    say("\n7. A new process opening the same file sees the same memory, and the chain verifies.")
    mem.close()
    again = SQLiteSharedMemory(db_path)
    say(f"   {len(again.read_scope())} live memories, log head {again.log.head()}, "
        f"hash chain verified up to {again.log.verify()}")
    again.close()


def _demo(args: argparse.Namespace) -> int:
    if args.db:
        demo(args.db)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        demo(os.path.join(tmp, "demo.db"))
    return 0


def _progress(label: str) -> Callable[[int, int], None]:
    """A progress callback printing ``label: position/head`` at most once a second."""
    last = 0.0

    def report(position: int, head: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 1.0 or position >= head:
            last = now
            share = 100.0 * position / head if head else 100.0
            print(f"{label}: {position}/{head} events ({share:.0f}%)", flush=True)

    return report


def _open(args: argparse.Namespace) -> tuple[SQLEventLog, RedisReadModel]:
    """The log (which must exist: projecting reads it, never creates it) and the view."""
    from projections.redis import RedisReadModel

    return SQLEventLog(args.log, create=False), RedisReadModel(args.into, prefix=args.prefix)


def _project(args: argparse.Namespace) -> int:
    from projections.runner import ProjectorRunner

    event_log, model = _open(args)
    runner = ProjectorRunner(event_log, model, lease_ttl=args.lease_ttl,
                             batch_size=args.batch_size, progress=_progress("projected"))
    if args.once:
        try:
            while runner.step() is None:
                print(f"waiting for the lease (held by {model.lease(args.lease_ttl).holder()})",
                      flush=True)
                time.sleep(runner.lease.ttl / 3)
            runner.lease.release(runner.owner)
        except LogMismatchError as exc:
            print(f"memswarm project: {_explain(exc)}", file=sys.stderr)
            return 2
        except StorageError as exc:
            print(f"memswarm project: {exc}", file=sys.stderr)
            return 1
        _print_status(runner)
        return 0
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runner.stop(timeout=0))
    print(f"projecting {args.log} into {args.into} (prefix {args.prefix!r}) as {runner.owner}",
          flush=True)
    thread = runner.start()
    while thread.is_alive():
        thread.join(args.report_every)
        if thread.is_alive():
            _print_status(runner)
    if runner.error is not None:  # exit non-zero, so that a supervisor restarts us
        print(f"memswarm project: the projector stopped: {_explain(runner.error)}",
              file=sys.stderr, flush=True)
        return 1
    return 0


def _explain(exc: BaseException) -> str:
    if isinstance(exc, LogMismatchError):
        return (f"{exc}; the view belongs to another log (is --log right?). It was left "
                "untouched; `memswarm replay ... --take-over` clears it for this log")
    return f"{type(exc).__name__}: {exc}"


def _print_status(runner: ProjectorRunner) -> None:
    try:
        status = runner.status()
    except StorageError as exc:
        print(f"status unavailable: {exc}", flush=True)
        return
    print(f"{'holding the lease' if status.holding else 'standing by'}; checkpoint "
          f"{status.checkpoint}, head {status.head}, lag {status.lag}, rebuilds "
          f"{status.rebuilds}", flush=True)


def _replay(args: argparse.Namespace) -> int:
    from projections.projector import Projector

    event_log, model = _open(args)
    print(f"rebuilding {args.into} (prefix {args.prefix!r}) from {args.log}", flush=True)
    try:
        position = Projector(event_log, model, args.batch_size).replay(
            _progress("replayed"), take_over=args.take_over)
    except LogMismatchError as exc:
        print(f"memswarm replay: {_explain(exc)}", file=sys.stderr)
        return 2
    finally:
        model.close()
        event_log.close()
    print(f"done: read model at position {position}", flush=True)
    return 0


def _copy(args: argparse.Namespace) -> int:
    from .cli_audit import progress_bar
    from .log.copy import copy_log, open_log

    source, target = open_log(args.source), open_log(args.target)
    copied = copy_log(source, target, args.batch_size, progress_bar("copying"))
    digest = target.digest()
    print(f"copied {copied} events; {args.target} is at {digest.position}:{digest.hash.hex()}")
    source.close()
    target.close()
    return 0


def _load_embedder(spec: str) -> tuple[object, str]:
    """``minilm`` (the default offline model) or ``package.module:factory`` (called with no
    arguments); returns the embedder and its model id."""
    if spec == "minilm":
        from projections.embedding import MiniLMEmbedding

        embedder = MiniLMEmbedding()
        return embedder, embedder.model_id
    module, _, attr = spec.partition(":")
    if not attr:
        raise InvalidInputError(f"--model takes 'minilm' or 'module:factory', not {spec!r}")
    embedder = getattr(importlib.import_module(module), attr)()
    return embedder, getattr(embedder, "model_id", spec)


def _reembed(args: argparse.Namespace) -> int:
    import chromadb

    from projections.chroma import ChromaReadModel, current_collection
    from projections.embedding import CachedEmbedder, EmbeddingCache

    from .cli_audit import progress_bar
    from .log.copy import open_log
    from .memory import SharedMemory
    from .reembed import reembed

    embedder, model_id = _load_embedder(args.model)
    client = chromadb.PersistentClient(args.path,
                                       settings=chromadb.Settings(anonymized_telemetry=False))
    serving, old_model = current_collection(client, args.collection)
    cache = EmbeddingCache(os.path.join(args.path, "vectors.db"))

    def not_loaded(texts: object) -> object:
        raise NotSupportedError("the old model is not loaded by `memswarm reembed`")

    old = ChromaReadModel(client, CachedEmbedder(not_loaded, old_model or "?", cache), serving)
    memory = SharedMemory(open_log(args.log), old, project_inline=False)
    print(f"re-embedding {serving} ({old_model or 'first model'}) with {model_id}; "
          "the old collection serves until the switch", flush=True)
    new = reembed(memory, embedder, model_id, progress_bar("re-embedding"))
    print(f"switched {args.collection} to {new.name} at position {new.checkpoint()}")
    return 0


def _add_projection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", default="sqlite:///memswarm.db",
                   help="the event log: sqlite:///path.db or any SQLAlchemy URL "
                        "(default: %(default)s)")
    p.add_argument("--into", required=True, help="the read model: redis://host:port/db")
    p.add_argument("--prefix", default="memswarm",
                   help="key prefix of the read model in Redis (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=1000, help="events per commit")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memswarm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="agents sharing memory on SQLite + in-memory")
    p.add_argument("--db", help="SQLite file to use (default: a temporary one)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("project", help="project a log into a Redis read model, then follow it")
    _add_projection_args(p)
    p.add_argument("--lease-ttl", type=float, default=10.0,
                   help="seconds before the lease of a dead projector expires")
    p.add_argument("--report-every", type=float, default=10.0,
                   help="seconds between two status lines")
    p.add_argument("--once", action="store_true", help="catch up, then exit")
    p.set_defaults(func=_project)
    p = sub.add_parser("replay", help="rebuild a Redis read model from the log")
    _add_projection_args(p)
    p.add_argument("--take-over", action="store_true",
                   help="rebuild the view even if it holds another log's view (replacing it)")
    p.set_defaults(func=_replay)
    p = sub.add_parser("copy", help="copy a log to another store (resumable, verified)")
    p.add_argument("--from", dest="source", required=True,
                   help="sqlite:///path.db, any SQLAlchemy URL, or gs://bucket/prefix")
    p.add_argument("--to", dest="target", required=True, help="the same kinds of URL")
    p.add_argument("--batch-size", type=int, default=1000)
    p.set_defaults(func=_copy)
    p = sub.add_parser("reembed", help="re-embed a Chroma view with another model, no downtime")
    p.add_argument("--log", default="sqlite:///memswarm.db", help="the event log URL")
    p.add_argument("--path", default="memswarm-chroma", help="the Chroma directory")
    p.add_argument("--collection", default="memswarm")
    p.add_argument("--model", required=True, help="'minilm' or 'package.module:factory'")
    p.set_defaults(func=_reembed)
    add_audit_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except MemSwarmError as exc:
        print(f"memswarm {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
