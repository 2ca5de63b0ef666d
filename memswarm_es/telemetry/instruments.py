"""MemSwarm's Prometheus metrics, through ``prometheus_client`` when it is installed (the
``metrics`` extra).

The instruments live in a registry of MemSwarm's own; :class:`MemSwarmCollector` shows them
(and the state of the projector runners in this process, read when scraped) to any registry it
is registered in. :func:`metrics` registers it; importing :mod:`memswarm_es.telemetry`
registers it in ``prometheus_client.REGISTRY``, as libraries do, so an application that
already serves that registry shows MemSwarm's metrics with no more code.

Labels are few and bounded: the kind of log or read model (``sql``, ``redis``...), the
operation, the event type, the error class; never an agent, memory or group id.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import REGISTRY, Collector
except ImportError:  # no prometheus_client: no metrics
    AVAILABLE = False
else:
    AVAILABLE = True

#: Upper bounds (seconds) of the latency histograms: from a cached read (0.1 ms) to a slow
#: remote append or a large batch (10 s).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0)

_KINDS: dict[type, str] = {}


def kind(obj: object, suffix: str) -> str:
    """The kind of a log or read model as a label: its class name without ``suffix``, in
    lower case (``RedisReadModel`` -> ``redis``)."""
    cls = type(obj)
    found = _KINDS.get(cls)
    if found is None:
        found = _KINDS[cls] = cls.__name__.removesuffix(suffix).lower() or cls.__name__.lower()
    return found


class Runner(Protocol):
    """What the collector reads of a projector runner when scraped."""

    holding: bool
    read_model: Any

    def status(self) -> Any: ...


class Instruments:
    """The counters and histograms, in a registry of their own (:attr:`registry`)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.append_seconds = Histogram(
            "memswarm_append_duration_seconds", "Time to append a batch of events to the log, "
            "durably (one observation per append)", ["log"], buckets=BUCKETS, registry=registry)
        self.appended = Counter(
            "memswarm_events_appended_total", "Events appended to the log",
            ["event_type"], registry=registry)
        self.read_seconds = Histogram(
            "memswarm_read_duration_seconds", "Time to answer a read, waiting for the read "
            "model included", ["operation"], buckets=BUCKETS, registry=registry)
        self.errors = Counter(
            "memswarm_errors_total", "Operations that raised, by operation and error class",
            ["operation", "error"], registry=registry)
        self.projected = Counter(
            "memswarm_events_projected_total", "Events applied to a read model",
            ["read_model"], registry=registry)
        self.batch_seconds = Histogram(
            "memswarm_projection_batch_duration_seconds", "Time to fold and commit a batch of "
            "events into a read model", ["read_model"], buckets=BUCKETS, registry=registry)
        self.rebuilds = Counter(
            "memswarm_projection_rebuilds_total", "Read models rebuilt from the log (replay, "
            "a view ahead of the log, a view that lost its data)", ["read_model"],
            registry=registry)
        self.refusals = Counter(
            "memswarm_permission_refusals_total", "Changes and reads refused to an agent, by "
            "what it tried", ["action"], registry=registry)
        self.forgets = Counter(
            "memswarm_forget_runs_total", "Forget runs, by outcome (ok, error)", ["outcome"],
            registry=registry)
        self.verifies = Counter(
            "memswarm_verify_runs_total", "Verify runs, by outcome (ok; failed: the chain or a "
            "snapshot does not match; error)", ["outcome"], registry=registry)
        self.runners: weakref.WeakSet[Runner] = weakref.WeakSet()


def _runner_families(runners: Iterable[Runner]) -> Iterator[Any]:
    """The lease and lag gauges of ``runners``, per kind of read model (lag: the largest; lease:
    how many hold one). A runner whose stores cannot be read now gives no lag sample."""
    held: dict[str, int] = {}
    lag: dict[str, int] = {}
    for runner in list(runners):
        label = kind(runner.read_model, "ReadModel")
        held[label] = held.get(label, 0) + bool(runner.holding)
        try:
            behind = runner.status().lag
        except Exception:  # an outage: the scrape must still answer; the runner retries
            continue
        lag[label] = max(lag.get(label, 0), behind)
    lease = GaugeMetricFamily("memswarm_projection_lease_held", "Projector runners in this "
                              "process holding the lease of their read model",
                              labels=["read_model"])
    for label, count in held.items():
        lease.add_metric([label], count)
    behind_family = GaugeMetricFamily("memswarm_projection_lag_events", "Events in the log that "
                                      "the read model of a runner in this process has not "
                                      "applied, when scraped", labels=["read_model"])
    for label, count in lag.items():
        behind_family.add_metric([label], count)
    yield lease
    yield behind_family


if AVAILABLE:
    INSTRUMENTS: Instruments | None = Instruments()

    class MemSwarmCollector(Collector):
        """MemSwarm's metrics, for any registry: ``registry.register(MemSwarmCollector())``
        (or :func:`metrics`)."""

        def collect(self) -> Iterable[Any]:
            assert INSTRUMENTS is not None
            yield from INSTRUMENTS.registry.collect()
            yield from _runner_families(INSTRUMENTS.runners)

        def describe(self) -> Iterable[Any]:
            assert INSTRUMENTS is not None
            yield from INSTRUMENTS.registry.collect()
            yield from _runner_families(())
else:
    INSTRUMENTS = None

    class MemSwarmCollector:  # type: ignore[no-redef]
        """Without ``prometheus_client`` there is nothing to collect."""

        def collect(self) -> Iterable[Any]:
            return ()


#: The one collector, registered in every registry :func:`metrics` is given.
COLLECTOR = MemSwarmCollector()
_REGISTERED: weakref.WeakSet[Any] = weakref.WeakSet()
_LOCK = threading.Lock()


def metrics(registry: Any = None) -> Any:
    """Show MemSwarm's metrics in ``registry`` (default ``prometheus_client.REGISTRY``); once
    per registry, however often it is called. Returns the collector (``None`` without
    ``prometheus_client``), which ``registry.unregister`` takes out again."""
    if not AVAILABLE:
        return None
    target = REGISTRY if registry is None else registry
    with _LOCK:
        if target not in _REGISTERED:
            target.register(COLLECTOR)
            _REGISTERED.add(target)
    return COLLECTOR


def serve(port: int, host: str = "127.0.0.1", registry: Any = None) -> Any:
    """Serve ``/metrics`` of ``registry`` (default ``prometheus_client.REGISTRY``, MemSwarm's
    metrics in it) over HTTP at ``host:port`` in a daemon thread; the server (its
    ``shutdown()`` stops it). Raises :class:`~memswarm_es.errors.MissingExtraError` without
    ``prometheus_client``."""
    if not AVAILABLE:
        from ..errors import MissingExtraError  # (the errors module imports this package)

        raise MissingExtraError("metrics", "prometheus_client")
    metrics(registry)
    server, _thread = start_http_server(port, addr=host,
                                        registry=REGISTRY if registry is None else registry)
    return server


def exposition(registry: Any = None) -> tuple[bytes, str]:
    """The text a scrape of ``registry`` (default ``prometheus_client.REGISTRY``) returns, and
    its content type (an empty page without ``prometheus_client``)."""
    if not AVAILABLE:
        return b"", "text/plain; charset=utf-8"
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    metrics(registry)
    return generate_latest(REGISTRY if registry is None else registry), CONTENT_TYPE_LATEST


def watch(runner: Runner) -> None:
    """Report ``runner``'s lease and lag while it lives."""
    if INSTRUMENTS is not None:
        INSTRUMENTS.runners.add(runner)
