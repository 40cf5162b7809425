"""A trace per message: W3C trace context (``traceparent``) from the submission through timer,
validator and sender, with an OpenTelemetry span for each step (accept, due, validate, the
SMTP transaction).

The context travels *in the events* (their ``traceparent`` field), not only beside them: the
timer holds a message for up to 30 days in its state, and what it stores is the event, so the
context survives a restart, a rebalance and a changelog recovery with it. Each step reads the
context of the event it handles, opens its span as a child, and writes the span's own context
into the event it publishes.

Spans are exported over OTLP/HTTP when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, with the other standard ``OTEL_*`` variables
honoured by the SDK. Without it nothing is recorded or exported (the API's no-op tracer): an
incoming ``traceparent`` is passed along unchanged, and a message without one gets none.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
#: the W3C ``traceparent`` of the request being served (set by the HTTP front doors' middleware)
incoming: ContextVar[str | None] = ContextVar("traceparent", default=None)
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_configured = False


def enabled() -> bool:
    """Whether spans are recorded and exported (an OTLP endpoint is configured)."""
    return any(os.environ.get(name) for name in _ENDPOINTS)


def configure(service: str, exporter: Any = None) -> None:
    """Set up the SDK for ``service`` when an OTLP endpoint is configured (spans batched, and
    flushed at exit), or with ``exporter`` (a test's in-memory one, spans passed at once);
    nothing otherwise."""
    global _configured
    if _configured or (exporter is None and not enabled()):
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"kairos-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)
    _configured = True


def valid(traceparent: str | None) -> str | None:
    """``traceparent`` if it is a W3C trace context header this code can continue, else None
    (a client's malformed header starts a new trace; it is never an error)."""
    if not traceparent or len(traceparent) > 128:
        return None
    context = _PROPAGATOR.extract({"traceparent": traceparent})
    span = trace.get_current_span(context).get_span_context()
    return traceparent if span.is_valid else None


@contextmanager
def step(name: str, traceparent: str | None, **attributes: Any) -> Iterator[str | None]:
    """A span named ``name``, child of ``traceparent``; yields the context to write into the
    event this step publishes (the span's own; when tracing is off, the parent's, at no
    cost)."""
    if not _configured:
        yield traceparent
        return
    parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    tracer = trace.get_tracer("kairos")
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=trace.SpanKind.CONSUMER if traceparent else trace.SpanKind.SERVER,
        attributes={k: v for k, v in attributes.items() if v is not None},
    ) as span:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
        yield carrier.get("traceparent") or traceparent


def annotate(**attributes: Any) -> None:
    """Add attributes to the current span (nothing when tracing is off)."""
    if _configured:
        trace.get_current_span().set_attributes(attributes)
