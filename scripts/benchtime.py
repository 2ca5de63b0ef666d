"""How the benchmarks measure: seconds a call takes, latency samples, percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latencies(fn: Callable[[], object], calls: int) -> list[float]:
    """Milliseconds each of ``calls`` calls of ``fn()`` took."""
    return [timed(fn) * 1000 for _ in range(calls)]


def percentile(samples: list[float], q: int) -> float:
    """The ``q``-th percentile (1 to 99) of ``samples``, interpolated."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]
