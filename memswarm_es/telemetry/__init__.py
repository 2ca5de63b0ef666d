"""Telemetry: Prometheus metrics (:mod:`.instruments`, extra ``metrics``), OpenTelemetry spans
(:mod:`.spans`, extra ``tracing``) and structured log lines (:mod:`.logs`).

The rest of MemSwarm calls the hooks here, each a line at a boundary: a log's ``append``, the
facade's reads, forget and verify, a projector's batch, a runner, a refusal. Without
``prometheus_client`` and ``opentelemetry-api`` the decorators return the function they are
given, so an uninstrumented install pays nothing; with them, a call costs a clock read and
an observation (a span only once the application has set a tracer provider).

For a library user: :func:`metrics` shows MemSwarm's metrics in a registry of their own
(``prometheus_client.REGISTRY`` has them already), :func:`serve_metrics` serves ``/metrics``.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from . import spans
from .instruments import AVAILABLE as METRICS
from .instruments import (
    COLLECTOR,
    INSTRUMENTS,
    MemSwarmCollector,
    exposition,
    kind,
    metrics,
    watch,
)
from .instruments import serve as serve_metrics

P = ParamSpec("P")
R = TypeVar("R")

#: True when there is anything to record to: metrics, or spans.
ENABLED = METRICS or spans.AVAILABLE
#: Values of a label that come from callers, at most, per series (then ``other``).
MAX_LABEL_VALUES = 32


def _timed(operation: str, span_attributes: dict[str, str | int],
           done: Callable[[Any, float], None], failed: Callable[[BaseException], None]
           ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator: the call timed (``done(result, seconds)`` after it returns,
    ``failed(error)`` if it raises) and, when spans are on, inside a span
    ``memswarm.<operation>``; without telemetry, the function itself."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        if not ENABLED:
            return fn

        @functools.wraps(fn)
        def measured(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                failed(exc)
                raise
            done(result, time.perf_counter() - start)
            return result

        @functools.wraps(fn)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            if spans.on():
                with spans.span(f"memswarm.{operation}", span_attributes):
                    return measured(*args, **kwargs)
            start = time.perf_counter()  # (measured, inlined: one call less on the hot path)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                failed(exc)
                raise
            done(result, time.perf_counter() - start)
            return result

        return timed

    return wrap


class _Children:
    """The children of a counter by the value of its last label, cached; past
    :data:`MAX_LABEL_VALUES` values (names that come from callers: event types, error
    classes, actions refused), new ones count as ``other``, so a series never multiplies."""

    def __init__(self, family: Any, *first: str) -> None:
        self.family = family
        self.first = first
        self.children: dict[str, Any] = {}

    def inc(self, value: str, amount: int = 1) -> None:
        child = self.children.get(value)
        if child is None and self.family is not None:
            if len(self.children) >= MAX_LABEL_VALUES:
                value = "other"
            child = self.children[value] = self.family.labels(*self.first, value)
        if child is not None:
            child.inc(amount)


def _error_counter(operation: str) -> Callable[[BaseException], None]:
    errors = _Children(INSTRUMENTS.errors if INSTRUMENTS else None, operation)

    def failed(exc: BaseException) -> None:
        errors.inc(type(exc).__name__)

    return failed


def timed_append(append: Callable[P, list[Any]], log_class: str) -> Callable[P, list[Any]]:
    """A log's ``append``, timed per call and its events counted per type (the log base class
    wraps every log's with it)."""
    label = log_class.removesuffix("EventLog").lower() or log_class.lower()
    observe = INSTRUMENTS.append_seconds.labels(label).observe if INSTRUMENTS else None
    appended = _Children(INSTRUMENTS.appended if INSTRUMENTS else None)

    def done(recorded: list[Any], seconds: float) -> None:
        if observe is not None:
            observe(seconds)
            if len(recorded) == 1:  # (a single write: no counting by type)
                appended.inc(recorded[0].type)
                return
            for kind, count in Counter(event.type for event in recorded).items():
                appended.inc(kind, count)

    return _timed("append", {"memswarm.log": label}, done, _error_counter("append"))(append)


def timed_read(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorates a facade read (``read_scope``, ``get``, ``search``...): its latency, its
    errors, its span."""
    observe = INSTRUMENTS.read_seconds.labels(operation).observe if INSTRUMENTS else None

    def done(_result: object, seconds: float) -> None:
        if observe is not None:
            observe(seconds)

    return _timed(operation, {"memswarm.operation": operation}, done,
                  _error_counter(operation))


def timed_run(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorates ``forget`` or ``verify``: runs counted by outcome (``ok``; ``failed`` for a
    result whose ``ok`` is false; ``error``), errors by class, and a span."""
    runs = getattr(INSTRUMENTS, {"forget": "forgets", "verify": "verifies"}[operation], None)
    count_error = _error_counter(operation)

    def done(result: object, _seconds: float) -> None:
        if runs is not None:
            runs.labels("ok" if getattr(result, "ok", True) else "failed").inc()

    def failed(exc: BaseException) -> None:
        count_error(exc)
        if runs is not None:
            runs.labels("error").inc()

    return _timed(operation, {"memswarm.operation": operation}, done, failed)


def _apply(model: Any, batch: Sequence[Any], position: int) -> int:
    reached: int = model.apply(batch)
    return reached


def _apply_measured(model: Any, batch: Sequence[Any], position: int) -> int:
    if not batch or batch[-1].position <= position:  # only the event at the checkpoint: a look
        return _apply(model, batch, position)
    label = kind(model, "ReadModel")
    if spans.on():
        with spans.span("memswarm.project_batch", {"memswarm.read_model": label,
                                                   "memswarm.events": len(batch)}):
            return _apply_counted(model, batch, position, label)
    return _apply_counted(model, batch, position, label)


_BATCH_CHILDREN: dict[str, tuple[Any, Any]] = {}  # per read model kind: (duration, events)


def _apply_counted(model: Any, batch: Sequence[Any], position: int, label: str) -> int:
    start = time.perf_counter()
    reached: int = model.apply(batch)
    _counted(label, time.perf_counter() - start, reached - position)
    return reached


def _counted(label: str, seconds: float, applied: int) -> None:
    if INSTRUMENTS is not None:
        children = _BATCH_CHILDREN.get(label)
        if children is None:
            children = _BATCH_CHILDREN[label] = (INSTRUMENTS.batch_seconds.labels(label),
                                                 INSTRUMENTS.projected.labels(label))
        children[0].observe(seconds)
        if applied > 0:
            children[1].inc(applied)


#: ``apply_batch(model, batch, position)``: ``model.apply(batch)`` (the projector's batch from
#: checkpoint ``position``), timed, traced and its events counted; the checkpoint reached.
apply_batch = _apply_measured if ENABLED else _apply


def projected(model: object, seconds: float, applied: int, started_ns: int,
              error: BaseException | None = None) -> None:
    """Count a batch of ``applied`` events a projector committed to ``model`` in ``seconds``
    itself (sent, not through :data:`apply_batch`), and trace it as a ``project_batch`` span
    from ``started_ns`` (:func:`time.time_ns`) to now; a batch whose commit raised ``error``
    is only traced, its span marked with the error."""
    if not ENABLED:
        return
    label = kind(model, "ReadModel")
    if error is None:
        _counted(label, seconds, applied)
    if spans.on():
        spans.record("memswarm.project_batch", {"memswarm.read_model": label,
                                                "memswarm.events": applied}, started_ns, error)


def _fold_in_store(model: Any, log: Any, position: int) -> int | None:
    reached: int | None = model.fold_in_store(log, position)
    return reached


def _fold_in_store_measured(model: Any, log: Any, position: int) -> int | None:
    start = time.perf_counter()
    reached: int | None = model.fold_in_store(log, position)
    if reached is not None and reached > position:  # (a look that found nothing: no batch)
        _counted(kind(model, "ReadModel"), time.perf_counter() - start, reached - position)
    return reached


#: ``fold_in_store(model, log, position)``: ``model.fold_in_store(log, position)`` (the model's
#: checkpoint), timed and its events counted as :data:`apply_batch`'s.
fold_in_store = _fold_in_store_measured if ENABLED else _fold_in_store


def rebuilt(model: object) -> None:
    """Count a rebuild of ``model`` from the log."""
    if INSTRUMENTS is not None:
        INSTRUMENTS.rebuilds.labels(kind(model, "ReadModel")).inc()


_REFUSALS = _Children(INSTRUMENTS.refusals if INSTRUMENTS else None)


def refused(action: str) -> None:
    """Count a refusal to an agent of ``action`` (``update``, ``write into``...)."""
    _REFUSALS.inc(action)


if METRICS:
    metrics()  # in the default registry, as a library's metrics are

__all__ = ["COLLECTOR", "ENABLED", "METRICS", "MemSwarmCollector", "apply_batch", "exposition",
           "fold_in_store", "metrics", "rebuilt", "refused", "serve_metrics", "timed_append",
           "timed_read", "timed_run", "watch"]
