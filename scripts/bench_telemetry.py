"""What telemetry costs on the hot paths: write_scope, read_scope and get timed in three
kinds of process, taken in turn (``--rounds`` times; the fastest of each counts): without
``prometheus_client`` and ``opentelemetry`` (blocked from import: the core install), with them
and no tracer provider (the default with the extras), and with an OpenTelemetry SDK set up
(spans made, none exported).

    .venv/bin/python scripts/bench_telemetry.py --memories 100000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MODES = ("core", "extras", "traced")

BLOCK = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"prometheus_client", "opentelemetry"}:
            raise ModuleNotFoundError(name, name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
"""


def per_op(fn: Callable[[int], object], count: int) -> float:
    """Microseconds per call of ``fn(i)`` for i in range(count)."""
    start = time.perf_counter()
    for i in range(count):
        fn(i)
    return (time.perf_counter() - start) / count * 1e6


def measure(mode: str, memories: int, directory: str) -> dict[str, float]:
    """The timings in this process (its imports already arranged for ``mode``)."""
    from memswarm_es import InMemorySharedMemory, SQLiteSharedMemory, telemetry

    if mode == "traced":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
    assert (mode != "core") == telemetry.ENABLED
    agents = max(memories // 10, 1)  # ten memories an agent: small reads, where cost shows
    out: dict[str, float] = {}
    with InMemorySharedMemory() as memory:
        ids: list[str] = []
        out["write_scope in-memory"] = per_op(lambda i: ids.append(memory.write_scope(
            {"text": f"note {i}"}, metadata={"agent_id": f"a{i % agents}"})), memories)
        out["read_scope in-memory (10 rows)"] = per_op(
            lambda i: memory.read_scope(agent_id=f"a{i % agents}"), memories)
        out["get in-memory"] = per_op(lambda i: memory.get(ids[i]), memories)
    with SQLiteSharedMemory(f"{directory}/{mode}.db", synchronous="NORMAL") as memory:
        ids = []
        out["write_scope SQLite NORMAL"] = per_op(lambda i: ids.append(memory.write_scope(
            {"text": f"note {i}"}, metadata={"agent_id": f"a{i % agents}"})), memories)
        out["read_scope SQLite (10 rows)"] = per_op(
            lambda i: memory.read_scope(agent_id=f"a{i % agents}"), memories)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each mode, taken in turn; the fastest counts (load moves)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one child's mode
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode is not None:
        print(json.dumps(measure(args.mode, args.memories, args.dir)))
        return
    results: dict[str, dict[str, float]] = {}
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as directory:
        for mode in [m for _ in range(args.rounds) for m in MODES]:
            argv = [__file__, "--memories", str(args.memories), "--mode", mode, "--dir",
                    directory]
            Path(directory, f"{mode}.db").unlink(missing_ok=True)  # each round from empty
            code = (f"{BLOCK if mode == 'core' else ''}import runpy, sys\n"
                    f"sys.argv = {argv!r}\nrunpy.run_path({__file__!r}, run_name='__main__')")
            done = subprocess.run([sys.executable, "-c", code], cwd=root, check=True,
                                  capture_output=True, text=True)
            timings = json.loads(done.stdout.strip().splitlines()[-1])
            best = results.setdefault(mode, timings)
            for op, micros in timings.items():
                best[op] = min(best[op], micros)
    print(f"{args.memories} memories, microseconds per operation (lower is better)\n")
    print(f"| operation | {' | '.join(MODES)} | extras/core | traced/core |")
    print("|---|" + "---:|" * (len(MODES) + 2))
    for op in results["core"]:
        row = [results[m][op] for m in MODES]
        print(f"| {op} | {' | '.join(f'{v:.1f}' for v in row)} | "
              f"{row[1] / row[0]:.2f} | {row[2] / row[0]:.2f} |")


if __name__ == "__main__":
    main()
