"""Real processes on one SQLite file: concurrent appenders, and a writer killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from memswarm_es import SQLiteSharedMemory
from memswarm_es.log import SQLEventLog

ROOT = Path(__file__).resolve().parent.parent

APPENDER = """
import sys
from memswarm_es import SQLiteSharedMemory
mem = SQLiteSharedMemory(sys.argv[1])
name, count = sys.argv[2], int(sys.argv[3])
for i in range(count):
    mem.write_scope(i, metadata={"agent_id": name, "group_id": "swarm"}, event_id=f"{name}-{i}",
                    actor=name)
    if sys.argv[4] == "ack":
        print(f"{name}-{i}", flush=True)
"""


def spawn(db: Path, name: str, count: int, ack: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(db), name, str(count), "ack" if ack else "-"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def test_processes_appending_to_one_file_each_event_once_in_commit_order(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"  # not created yet: the writers race to create it too
    writers = [spawn(db, f"p{n}", 60, ack=False) for n in range(4)]
    for w in writers:
        assert w.wait(timeout=120) == 0
    log = SQLEventLog(f"sqlite:///{db}")
    events = log.read()
    assert [e.position for e in events] == list(range(1, 241))
    assert sorted(e.event_id for e in events) == sorted(
        f"p{n}-{i}" for n in range(4) for i in range(60))
    for n in range(4):  # each writer's events are in the order it committed them
        mine = [e.data["value"] for e in events if e.actor == f"p{n}"]  # type: ignore[index]
        assert mine == list(range(60))
    times = [e.recorded_at_us for e in events]
    assert times == sorted(times)
    assert log.verify() == 240
    reader = SQLiteSharedMemory(str(db))
    assert len(reader.read_scope(group_id="swarm")) == 240
    log.close()
    reader.close()


def test_writer_killed_mid_append_loses_no_acknowledged_write(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    SQLiteSharedMemory(str(db)).close()
    for round_ in range(3):
        writer = spawn(db, f"w{round_}", 100_000, ack=True)
        acknowledged: list[str] = []
        assert writer.stdout is not None
        deadline = time.monotonic() + 30
        while len(acknowledged) < 50 + 40 * round_ and time.monotonic() < deadline:
            acknowledged.append(writer.stdout.readline().strip())
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        assert len(acknowledged) >= 50, "the writer did not get going"

        mem = SQLiteSharedMemory(str(db))
        events = mem.log.read()
        assert [e.position for e in events] == list(range(1, len(events) + 1))
        assert mem.log.verify() == len(events)
        ids = {e.event_id for e in events}
        assert set(acknowledged) <= ids
        mine = [e.data["value"] for e in events if e.actor == f"w{round_}"]
        assert mine == list(range(len(mine)))  # a prefix: nothing half-written, no hole
        assert len(mem.read_scope(agent_id=f"w{round_}")) == len(mine)
        mem.write_scope("after the crash", metadata={"agent_id": "survivor"})
        mem.close()
