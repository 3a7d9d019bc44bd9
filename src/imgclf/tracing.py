"""OpenTelemetry traces, as an option (``IMGCLF_TRACING=true``): one trace per request, with
spans for parsing the upload, the queue wait, the worker's decode and inference, and the record.

The code is instrumented with the OpenTelemetry API alone, whose tracer does nothing until a
provider is set; ``configure_tracing`` sets the SDK's, exporting by OTLP over HTTP to where the
standard ``OTEL_EXPORTER_OTLP_*`` variables say (default ``http://localhost:4318``). A job carries
its request's W3C ``traceparent`` through either queue, so the worker's spans, in whatever process
or machine computes the job, join the request's trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer = trace.get_tracer("imgclf")
_propagator = TraceContextTextMapPropagator()
_NO_SPAN = nullcontext()
_provider_set: bool | None = None


def tracing() -> bool:
    """Whether this process exports spans, decided at its first request (``configure_tracing``
    runs before, as the process starts): asking OpenTelemetry each time cost every upload
    four reads of the process's environment."""
    global _provider_set
    if _provider_set is None:
        _provider_set = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _provider_set


def span(name: str) -> AbstractContextManager[object]:
    """A span of the current trace, named ``name``; nothing at all while nothing traces (the
    API's no-op spans took 5-8% of the event loop's time per upload)."""
    return tracer.start_as_current_span(name) if tracing() else _NO_SPAN


def configure_tracing(service_name: str) -> None:
    """This process exports its spans by OTLP/HTTP (the ``tracing`` extra installs the SDK);
    once per process: a worker that is recycled keeps its exporter."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    global _provider_set
    _provider_set = True


def current_traceparent() -> str:
    """The current span's W3C ``traceparent``, for a job to carry; empty when nothing traces."""
    if not tracing():
        return ""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


@contextmanager
def job_span(traceparent: str, name: str, **attributes: Any) -> Iterator[None]:
    """A span of the worker's work on a job, in its request's trace; nothing when untraced."""
    if not traceparent:
        yield
        return
    parent = _propagator.extract({"traceparent": traceparent})
    with tracer.start_as_current_span(name, context=parent, attributes=attributes):
        yield


def record_job_span(
    traceparent: str, name: str, start_ns: int, end_ns: int, **attributes: Any
) -> None:
    """A span that has already happened (one batch's inference, told to each job's trace)."""
    if not traceparent:
        return
    parent = _propagator.extract({"traceparent": traceparent})
    span = tracer.start_span(name, context=parent, start_time=start_ns, attributes=attributes)
    span.end(end_time=end_ns)
