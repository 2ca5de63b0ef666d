"""Metrics for a library user: MemSwarm's collectors in a registry of one's own, the numbers
moving after writes, reads, refusals, forgets, verifies, projection and rebuilds; label values
bounded; and a core install without ``prometheus_client`` or ``opentelemetry`` that works."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from memswarm_es import SQLiteSharedMemory, telemetry
from memswarm_es.errors import MemoryNotFoundError, PermissionDeniedError
from memswarm_es.log import open_log
from projections import open_read_model
from projections.projector import Projector
from projections.runner import ProjectorRunner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    mine = CollectorRegistry()
    assert telemetry.metrics(registry=mine) is telemetry.COLLECTOR
    assert telemetry.metrics(registry=mine) is telemetry.COLLECTOR  # once per registry
    yield mine
    mine.unregister(telemetry.COLLECTOR)


class Values:
    """Samples of a registry, read as the difference from when this was made (the collectors
    count for the whole process)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.start = self.now()

    def now(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in self.registry.collect() for s in family.samples}

    def moved(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return self.now().get(key, 0.0) - self.start.get(key, 0.0)

    def value(self, name: str, **labels: str) -> float | None:
        return self.now().get((name, tuple(sorted(labels.items()))))


def test_a_write_read_refusal_forget_and_verify_move_the_numbers(
        registry: CollectorRegistry, tmp_path: Path) -> None:
    values = Values(registry)
    with SQLiteSharedMemory(str(tmp_path / "swarm.db")) as memory:
        shared = memory.write_scope("bridge closed", metadata={"agent_id": "a"},
                                    readable_by=["agent:b"])
        memory.update(shared, "bridge open")
        assert [e.memory_id for e in memory.read_scope(agent_id="a")] == [shared]
        assert memory.get(shared).value == "bridge open"
        with pytest.raises(MemoryNotFoundError):
            memory.get("no-such-memory")
        with pytest.raises(PermissionDeniedError):
            memory.agent("b").update(shared, "b may read, not change")
        with pytest.raises(PermissionDeniedError):
            memory.agent("b").write_scope("as a", metadata={"agent_id": "a"})
        assert memory.verify().ok
        memory.forget(shared, "asked to")

    assert values.moved("memswarm_events_appended_total", event_type="memory.written") == 1
    assert values.moved("memswarm_events_appended_total", event_type="memory.updated") == 1
    assert values.moved("memswarm_events_appended_total", event_type="memory.forgotten") == 1
    assert values.moved("memswarm_append_duration_seconds_count", log="sql") == 3
    assert values.moved("memswarm_append_duration_seconds_sum", log="sql") > 0
    assert values.moved("memswarm_read_duration_seconds_count", operation="read_scope") == 1
    assert values.moved("memswarm_read_duration_seconds_count", operation="get") == 1  # ok only
    assert values.moved("memswarm_errors_total", operation="get",
                        error="MemoryNotFoundError") == 1
    assert values.moved("memswarm_permission_refusals_total", action="update") == 1
    assert values.moved("memswarm_permission_refusals_total", action="write as") == 1
    assert values.moved("memswarm_verify_runs_total", outcome="ok") == 1
    assert values.moved("memswarm_forget_runs_total", outcome="ok") == 1


def test_a_failed_verify_and_a_failed_forget_count_as_such(
        registry: CollectorRegistry, tmp_path: Path) -> None:
    values = Values(registry)
    path = tmp_path / "swarm.db"
    with SQLiteSharedMemory(str(path)) as memory:
        memory.write_scope("a note")
        with pytest.raises(MemoryNotFoundError):
            memory.forget("no-such-memory", "asked to")
    import sqlite3

    with sqlite3.connect(path) as db:  # tamper with the log, as an attacker with the file could
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        events = next(t for t in tables if t.endswith("events"))
        db.execute(f"update {events} set actor = 'mallory'")
    with SQLiteSharedMemory(str(path)) as memory:
        assert not memory.verify().ok
    assert values.moved("memswarm_forget_runs_total", outcome="error") == 1
    assert values.moved("memswarm_errors_total", operation="forget",
                        error="MemoryNotFoundError") == 1
    assert values.moved("memswarm_verify_runs_total", outcome="failed") == 1


def test_a_runner_reports_lease_and_lag_when_scraped(registry: CollectorRegistry) -> None:
    values = Values(registry)
    log = open_log("memory://")
    model = open_read_model("memory://")
    runner = ProjectorRunner(log, model)
    memory_ids = [f"m{i}" for i in range(5)]
    from memswarm_es.events import EventType, NewEvent, encode_content
    from memswarm_es.scopes import Scope

    def written(memory_id: str) -> NewEvent:
        return NewEvent(type=EventType.MEMORY_WRITTEN, scope=Scope(agent_id="a"), actor="a",
                        payload=encode_content({"value": memory_id}), memory_id=memory_id,
                        version=1, event_id=memory_id)

    log.append([written(m) for m in memory_ids[:3]])
    assert values.value("memswarm_projection_lag_events", read_model="inmemory") == 3
    assert values.value("memswarm_projection_lease_held", read_model="inmemory") == 0
    assert runner.step() == 3
    assert values.value("memswarm_projection_lag_events", read_model="inmemory") == 0
    assert values.value("memswarm_projection_lease_held", read_model="inmemory") == 1
    assert values.moved("memswarm_events_projected_total", read_model="inmemory") == 3
    assert values.moved("memswarm_projection_batch_duration_seconds_count",
                        read_model="inmemory") == 1
    log.append([written(m) for m in memory_ids[3:]])  # the lag is read when scraped
    assert values.value("memswarm_projection_lag_events", read_model="inmemory") == 2
    runner.step()
    assert values.value("memswarm_projection_lag_events", read_model="inmemory") == 0
    assert values.moved("memswarm_events_projected_total", read_model="inmemory") == 5

    assert Projector(log, model).replay() == 5
    assert values.moved("memswarm_projection_rebuilds_total", read_model="inmemory") == 1
    assert values.moved("memswarm_events_projected_total", read_model="inmemory") == 10
    del runner  # a runner that is gone is no longer reported
    import gc

    gc.collect()
    assert values.value("memswarm_projection_lease_held", read_model="inmemory") is None


def test_label_values_from_callers_are_bounded() -> None:
    mine = CollectorRegistry()
    counter = Counter("t_total", "t", ["operation", "error"], registry=mine)
    children = telemetry._Children(counter, "get")
    for i in range(telemetry.MAX_LABEL_VALUES + 10):
        children.inc(f"Error{i}")
    errors = {s.labels["error"] for s in next(iter(mine.collect())).samples
              if s.name == "t_total"}
    assert len(errors) == telemetry.MAX_LABEL_VALUES + 1 and "other" in errors
    assert mine.get_sample_value("t_total", {"operation": "get", "error": "other"}) == 10


WITHOUT_TELEMETRY = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"prometheus_client", "opentelemetry"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
from memswarm_es import SQLiteSharedMemory, telemetry
from memswarm_es.errors import MissingExtraError
from memswarm_es.memory import SharedMemory
from memswarm_es.log.sql import SQLEventLog
assert not telemetry.ENABLED and telemetry.metrics() is None
# nothing wrapped: the hot paths are the functions as written
assert not hasattr(SharedMemory._read_scope, "__wrapped__")
assert not hasattr(SQLEventLog.append, "__wrapped__")
with SQLiteSharedMemory(sys.argv[1]) as memory:
    mid = memory.write_scope("note", metadata={"agent_id": "a"})
    assert [e.memory_id for e in memory.read_scope(agent_id="a")] == [mid]
    memory.forget(mid, "asked")
    assert memory.verify().ok
try:
    telemetry.serve_metrics(9)
except MissingExtraError as exc:
    print(exc)
"""


def test_the_core_works_without_prometheus_client_or_opentelemetry(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", WITHOUT_TELEMETRY, str(tmp_path / "s.db")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pip install 'memswarm-es[metrics]'" in result.stdout


def test_the_hot_paths_are_wrapped_when_installed() -> None:
    from memswarm_es.log.inprocess import InMemoryEventLog
    from memswarm_es.log.sql import SQLEventLog
    from memswarm_es.memory import SharedMemory

    for fn in (SharedMemory._read_scope, SharedMemory._get, SharedMemory._search,
               SharedMemory._forget, SharedMemory.verify, SQLEventLog.append,
               InMemoryEventLog.append):
        assert hasattr(fn, "__wrapped__"), fn
