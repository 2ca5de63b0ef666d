#!/usr/bin/env python3
"""Benchmark the GCS log on fake-gcs-server beside the SQLite log, in one run.

    python3 scripts/dev.py run python scripts/bench_gcs.py [--single 200] [--events 20000]

Prints appends/s (single and batched) and events/s read for both logs, and the HTTP requests
the GCS log made per 1k events in each phase.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_log import new_events  # noqa: E402 - the same workload as the log bench

from memswarm_es.log import EventLog, SQLEventLog  # noqa: E402
from memswarm_es.log.gcs import GCSEventLog  # noqa: E402
from tests.servers_gcs import GCSServer, emulator_client  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=200, help="appends of one event")
    parser.add_argument("--events", type=int, default=20_000, help="events in batches")
    parser.add_argument("--batch", type=int, default=500, help="events per batch")
    args = parser.parse_args()

    server = GCSServer()
    requests = {"n": 0}
    try:
        client = emulator_client(server.url)
        client._http.hooks["response"].append(lambda *a, **k: requests.__setitem__(
            "n", requests["n"] + 1))
        client.create_bucket("bench")
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            logs: dict[str, Callable[[str], EventLog]] = {
                "GCS (fake-gcs-server)": lambda name: GCSEventLog("bench", f"{name}/", client),
                "SQLite (FULL)": lambda name: SQLEventLog(
                    f"sqlite:///{os.path.join(tmp, name + '.db')}"),
            }
            events = new_events(args.single + args.events)
            singles, batched = events[:args.single], events[args.single:]
            chunks = [batched[i:i + args.batch] for i in range(0, len(batched), args.batch)]
            for kind, make in logs.items():
                log = make("single")
                requests["n"] = 0
                seconds = timed(lambda log=log: [log.append([e]) for e in singles])
                rows.append((kind, "append one at a time", args.single / seconds,
                             requests["n"] * 1000 / args.single))
                log = make("batched")
                requests["n"] = 0
                seconds = timed(lambda log=log: [log.append(c) for c in chunks])
                rows.append((kind, f"append, batches of {args.batch}", args.events / seconds,
                             requests["n"] * 1000 / args.events))
                reader = make("batched")
                requests["n"] = 0
                seconds = timed(lambda reader=reader: list(reader.iter_events(0, 1000)))
                rows.append((kind, "read the whole log (a new reader)",
                             args.events / seconds, requests["n"] * 1000 / args.events))
    finally:
        server.close()

    print(f"\n{'log':<24}{'measure':<36}{'events/s':>12}{'requests/1k':>14}")
    print("-" * 86)
    for kind, measure, rate, per_k in rows:
        shown = f"{per_k:.1f}" if kind.startswith("GCS") else "-"
        print(f"{kind:<24}{measure:<36}{rate:>12,.0f}{shown:>14}")
    print("-" * 86)
    for i in range(3):
        print(f"GCS / SQLite, {rows[i][1]}: {rows[i][2] / rows[i + 3][2]:.2f}x")


if __name__ == "__main__":
    main()
