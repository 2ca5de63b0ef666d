"""Structured logs: the runner's lines carry stable event names and fields; the JSON formatter
writes one object per line; ``memswarm --log-format json project`` writes only such lines."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memswarm_es import SQLiteSharedMemory
from memswarm_es.events import EventType, NewEvent, encode_content
from memswarm_es.log import open_log
from memswarm_es.scopes import Scope
from memswarm_es.telemetry.logs import PLAIN, JSONFormatter, event
from projections import open_read_model
from projections.runner import ProjectorRunner

ROOT = Path(__file__).resolve().parent.parent


def written(memory_id: str) -> NewEvent:
    return NewEvent(type=EventType.MEMORY_WRITTEN, scope=Scope(agent_id="a"), actor="a",
                    payload=encode_content({"value": memory_id}), memory_id=memory_id,
                    version=1, event_id=memory_id)


def test_the_runners_lines_name_their_event_and_carry_fields(
        caplog: pytest.LogCaptureFixture) -> None:
    log = open_log("memory://")
    log.append([written(f"m{i}") for i in range(30)])
    runner = ProjectorRunner(log, open_read_model("memory://"), batch_size=10, owner="me")
    caplog.set_level(logging.INFO, logger="projections.runner")
    runner.step()
    runner.step()  # nothing changed: no line
    lines = [(getattr(r, "event", None), {k: getattr(r, k) for k in ("owner", "checkpoint",
                                                                      "head") if hasattr(r, k)})
             for r in caplog.records]
    assert lines == [
        ("projection.lease_acquired", {"owner": "me"}),
        ("projection.lagging", {"owner": "me", "checkpoint": 0, "head": 30}),
        ("projection.caught_up", {"owner": "me", "checkpoint": 30}),
    ]
    assert caplog.records[2].getMessage() == "me: caught up: at position 30"  # still a sentence


def test_the_json_formatter_writes_one_object_a_line() -> None:
    formatter = JSONFormatter()
    record = logging.LogRecord("projections.runner", logging.INFO, __file__, 1,
                               "%s: caught up", ("me",), None)
    for key, value in event("projection.caught_up", owner="me", checkpoint=7).items():
        setattr(record, key, value)
    line = json.loads(formatter.format(record))
    assert {k: line[k] for k in ("level", "logger", "event", "message", "owner",
                                 "checkpoint")} == {
        "level": "INFO", "logger": "projections.runner", "event": "projection.caught_up",
        "message": "me: caught up", "owner": "me", "checkpoint": 7}
    assert line["time"].endswith("+00:00")
    try:
        raise ValueError("multi\nline")
    except ValueError:
        plain = logging.LogRecord("x", logging.ERROR, __file__, 1, "it broke", (),
                                  sys.exc_info())
    text = formatter.format(plain)
    assert "\n" not in text
    parsed = json.loads(text)
    assert parsed["event"] == PLAIN and "ValueError: multi\nline" in parsed["exception"]


def test_log_format_json_makes_every_line_of_project_json(tmp_path: Path, redis_url: str,
                                                          redis_prefix: str) -> None:
    db = tmp_path / "swarm.db"
    with SQLiteSharedMemory(str(db)) as memory:
        memory.write_scope("a note", metadata={"agent_id": "scout"})
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
           "MEMSWARM_LOG_FORMAT": "json"}  # the variable, as a service's unit file would set it
    process = subprocess.Popen(
        [sys.executable, "-m", "memswarm_es.cli", "project", "--log", str(db), "--into",
         redis_url, "--prefix", redis_prefix],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        view = open_read_model(redis_url, prefix=redis_prefix)
        deadline = time.monotonic() + 60
        while view.checkpoint() < 1:  # the runner logs "caught up" right after its commit
            assert process.poll() is None and time.monotonic() < deadline, "not caught up"
            time.sleep(0.1)
        view.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    lines = [json.loads(line) for line in err.splitlines()]  # every line parses
    events = [line["event"] for line in lines]
    assert "projection.lease_acquired" in events and "projection.caught_up" in events, err
    caught_up = next(line for line in lines if line["event"] == "projection.caught_up")
    assert caught_up["checkpoint"] == 1 and caught_up["logger"] == "projections.runner"
