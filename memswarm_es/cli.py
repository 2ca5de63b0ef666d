"""The ``memswarm`` command."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence

from projections.fold import MemoryEntry

from .memory import SQLiteSharedMemory


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

    say("\n6. A new process opening the same file sees the same memory, and the chain verifies.")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memswarm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="agents sharing memory on SQLite + in-memory")
    p.add_argument("--db", help="SQLite file to use (default: a temporary one)")
    p.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
