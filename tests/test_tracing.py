"""Spans: with an OpenTelemetry SDK set up by the application (here with the in-memory
exporter), MemSwarm's appends, reads, searches, forgets, verifies and projection batches are
spans, children of the span the caller had open (an agent's tool call)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from memswarm_es import SharedMemory, SQLiteSharedMemory, telemetry
from memswarm_es.errors import CheckpointConflictError, MemoryNotFoundError
from memswarm_es.log import open_log
from memswarm_es.telemetry import spans
from projections import open_read_model
from projections.projector import Projector
from projections.redis import RedisReadModel

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = InMemorySpanExporter()


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider: set once (OpenTelemetry allows no second one), its spans
    kept in memory and cleared for each test."""
    if not spans.on():
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    assert spans.on()
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def children_of(parent: ReadableSpan, found: tuple[ReadableSpan, ...]) -> list[str]:
    return [s.name for s in found if s.parent is not None
            and s.parent.span_id == parent.context.span_id]


def test_memswarm_spans_sit_under_the_callers_span(exporter: InMemorySpanExporter,
                                                   tmp_path: Path) -> None:
    tracer = trace.get_tracer("an agent")
    with SQLiteSharedMemory(str(tmp_path / "swarm.db")) as memory:
        with tracer.start_as_current_span("tool call: write"):
            mid = memory.agent("scout").write_scope("bridge closed")
        with tracer.start_as_current_span("tool call: read"):
            assert [e.memory_id for e in memory.agent("scout").read_scope()] == [mid]
            memory.agent("scout").get(mid)
        with tracer.start_as_current_span("tool call: forget and verify"):
            memory.forget(mid, "asked to")
            assert memory.verify().ok
    found = exporter.get_finished_spans()
    by_name = {s.name: s for s in found}
    assert children_of(by_name["tool call: write"], found) == ["memswarm.append"]
    assert children_of(by_name["tool call: read"], found) == ["memswarm.read_scope",
                                                              "memswarm.get"]
    assert set(children_of(by_name["tool call: forget and verify"], found)) == {
        "memswarm.forget", "memswarm.verify"}
    forget = by_name["memswarm.forget"]
    assert "memswarm.append" in children_of(forget, found)  # the forget's own append, inside
    assert by_name["memswarm.append"].attributes == {"memswarm.log": "sql"}
    assert by_name["memswarm.get"].attributes == {"memswarm.operation": "get"}
    assert {s.instrumentation_scope.name for s in found if s.name.startswith("memswarm.")
            and s.instrumentation_scope is not None} == {spans.SCOPE}


def test_a_projection_batch_is_a_span_and_an_error_marks_its_span(
        exporter: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("an agent")
    log = open_log("memory://")
    writer = SharedMemory(log, open_read_model("memory://"))
    memory = SharedMemory(log, open_read_model("memory://"))  # another view of the same log
    for i in range(3):
        writer.write_scope(f"note {i}", metadata={"agent_id": "a"})
    exporter.clear()
    with tracer.start_as_current_span("tool call: read"):
        memory.read_scope(agent_id="a")  # catches its view up first: one batch of 3 events
        with pytest.raises(MemoryNotFoundError):
            memory.get("nothing-here")
    found = exporter.get_finished_spans()
    read = next(s for s in found if s.name == "memswarm.read_scope")
    (batch,) = [s for s in found if s.name == "memswarm.project_batch"]
    assert batch.parent is not None and batch.parent.span_id == read.context.span_id
    assert batch.attributes == {"memswarm.read_model": "inmemory", "memswarm.events": 3}
    failed = next(s for s in found if s.name == "memswarm.get")
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]


def test_each_batch_sent_to_redis_is_a_span_while_the_next_is_folded(
        exporter: InMemorySpanExporter, redis_url: str, redis_prefix: str) -> None:
    """The projector folds a batch while Redis runs the one before: each batch still gets its
    ``project_batch`` span (fold to answer), under the caller's span, the spans overlapping."""
    log = open_log("memory://")
    writer = SharedMemory(log, open_read_model("memory://"))
    for i in range(25):
        writer.write_scope(f"note {i}", metadata={"agent_id": "a"})
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    assert model.sends_commits
    exporter.clear()
    try:
        with trace.get_tracer("a runner").start_as_current_span("catch up"):
            assert Projector(log, model, batch_size=10).catch_up() == 25
    finally:
        model.close()
    found = exporter.get_finished_spans()
    caller = next(s for s in found if s.name == "catch up")
    batches = sorted((s for s in found if s.name == "memswarm.project_batch"),
                     key=lambda s: s.start_time or 0)
    assert [s.attributes for s in batches] == [
        {"memswarm.read_model": "redis", "memswarm.events": n} for n in (10, 10, 5)]
    assert all(s.parent is not None and s.parent.span_id == caller.context.span_id
               for s in batches)
    for sent, next_one in itertools.pairwise(batches):  # answered after the next was folded
        assert (next_one.start_time or 0) < (sent.end_time or 0)


def test_a_sent_batch_whose_commit_failed_is_an_error_span_and_not_counted(
        exporter: InMemorySpanExporter) -> None:
    model = open_read_model("memory://")
    registry = telemetry.INSTRUMENTS.registry

    def counted() -> float | None:
        return registry.get_sample_value("memswarm_events_projected_total",
                                         {"read_model": "inmemory"})

    before = counted()
    started = time.time_ns()
    telemetry.projected(model, 0.0, 3, started, CheckpointConflictError(4, 9))
    (span,) = exporter.get_finished_spans()
    assert span.name == "memswarm.project_batch" and span.start_time == started
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert counted() == before


NO_PROVIDER_THEN_ONE = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from memswarm_es import InMemorySharedMemory
from memswarm_es.telemetry import spans
memory = InMemorySharedMemory()
assert not spans.on()
with spans.span("memswarm.x"):
    assert not trace.get_current_span().is_recording()  # nothing started
memory.write_scope("before")
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)  # set after MemSwarm was imported and used
assert spans.on()
memory.write_scope("after")
print(sorted(s.name for s in exporter.get_finished_spans()))
"""


def test_spans_start_once_the_application_sets_a_provider(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", NO_PROVIDER_THEN_ONE], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "['memswarm.append', 'memswarm.project_batch']"
