"""OpenTelemetry spans around MemSwarm's operations, through ``opentelemetry-api`` when it is
installed (the ``tracing`` extra; any OpenTelemetry SDK installs it too).

A span is started only once the application has set a tracer provider (an SDK): until then
:func:`on` is one attribute check, where the API's own no-op span would cost microseconds on
every read. A span started here is a child of the span current in the caller's context, so an
agent's tool call is the parent of the MemSwarm spans it causes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from types import ModuleType

_trace: ModuleType | None
try:
    from opentelemetry import trace as _trace
except ImportError:  # no opentelemetry-api: no spans
    _trace = None

#: True when ``opentelemetry-api`` is installed.
AVAILABLE = _trace is not None

#: The name MemSwarm's tracer goes by (the instrumentation scope of its spans).
SCOPE = "memswarm_es"

if _trace is not None and os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"):
    _trace.get_tracer_provider()  # the provider the environment names, loaded as on first use


#: A proxy that uses the provider the application sets, whenever it sets it.
_TRACER = _trace.get_tracer(SCOPE) if _trace is not None else None


class _Provider:
    """Where to look whether a tracer provider is set: the API module's global, read without
    the environment lookup :func:`opentelemetry.trace.get_tracer_provider` makes on every call;
    an API without that global is taken to always have one."""

    _TRACER_PROVIDER: object = True


_PROVIDER: object = (_trace if _trace is not None and hasattr(_trace, "_TRACER_PROVIDER")
                     else _Provider)


def on() -> bool:
    """True when an application has set a tracer provider: spans are worth starting."""
    return _PROVIDER._TRACER_PROVIDER is not None  # type: ignore[attr-defined]


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, str | int] | None = None) -> Iterator[None]:
    """A span ``name`` around the block, current while it runs (an exception is recorded on
    it and sets its status to error); nothing without a tracer provider."""
    if _TRACER is None or not on():
        yield
        return
    with _TRACER.start_as_current_span(name, attributes=dict(attributes or {})):
        yield


def record(name: str, attributes: Mapping[str, str | int], start_ns: int,
           error: BaseException | None = None) -> None:
    """A span ``name`` from ``start_ns`` (:func:`time.time_ns`) to now, a child of the span
    current in the caller's context, for work that overlapped other work (no one block held
    it); ``error`` is recorded on it and sets its status to error. Nothing without a tracer
    provider."""
    if _trace is None or _TRACER is None or not on():
        return
    made = _TRACER.start_span(name, attributes=dict(attributes), start_time=start_ns)
    if error is not None:
        made.record_exception(error)
        made.set_status(_trace.Status(_trace.StatusCode.ERROR, str(error)))
    made.end()
