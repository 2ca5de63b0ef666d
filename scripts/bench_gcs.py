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
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_log import append_all, new_events, one_at_a_time  # noqa: E402 - same workload
from benchtable import Cell, print_table, ratio  # noqa: E402
from benchtime import timed  # noqa: E402

from memswarm_es.log import EventLog, SQLEventLog  # noqa: E402
from memswarm_es.log.gcs import GCSEventLog  # noqa: E402
from tests.servers_gcs import GCSServer, emulator_client  # noqa: E402


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
        rows: list[tuple[str, str, float, float]] = []
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
                seconds = timed(partial(append_all, log, one_at_a_time(singles)))
                rows.append((kind, "append one at a time", args.single / seconds,
                             requests["n"] * 1000 / args.single))
                log = make("batched")
                requests["n"] = 0
                seconds = timed(partial(append_all, log, chunks))
                rows.append((kind, f"append, batches of {args.batch}", args.events / seconds,
                             requests["n"] * 1000 / args.events))
                reader = make("batched")
                requests["n"] = 0
                seconds = timed(partial(list, reader.iter_events(0, 1000)))
                rows.append((kind, "read the whole log (a new reader)",
                             args.events / seconds, requests["n"] * 1000 / args.events))
    finally:
        server.close()

    sqlite = {measure: rate for kind, measure, rate, _ in rows if kind.startswith("SQLite")}
    shown: list[list[Cell]] = [[kind, measure, rate, per_k if kind.startswith("GCS") else "-"]
                               for kind, measure, rate, per_k in rows]  # requests: GCS only
    print_table("GCS log on fake-gcs-server beside the SQLite log",
                ["log", "measure", "events/s", "requests/1k"], shown, decimals=[0, 0, 0, 1],
                notes=[ratio(f"GCS / SQLite, {measure}", rate / sqlite[measure])
                       for kind, measure, rate, _ in rows if kind.startswith("GCS")])


if __name__ == "__main__":
    main()
