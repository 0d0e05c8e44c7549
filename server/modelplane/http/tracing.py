"""OpenTelemetry spans per request, exported over OTLP/HTTP when configured.

With no endpoint configured the tracer is a no-op and costs nothing on the
request path. The incoming `traceparent` header is honoured, so a gateway's
trace continues through the model server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from modelplane.http.asgi import Scope

_PROPAGATOR = TraceContextTextMapPropagator()


class _SpanHandle:
    def __init__(self, span: Any) -> None:
        self._span = span

    def finish(self, status: int) -> None:
        if self._span is None:
            return
        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self._span.set_status(Status(StatusCode.ERROR))


class RequestTracer:
    """Wraps one request in a server span; `exporter=None` disables tracing."""

    def __init__(self, exporter: SpanExporter | None, service_name: str = "modelplane-server"):
        self._tracer: trace.Tracer | None = None
        self.provider: TracerProvider | None = None
        if exporter is not None:
            self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
            self._tracer = self.provider.get_tracer("modelplane.server")

    @contextmanager
    def span(self, scope: Scope, request_id: str) -> Iterator[_SpanHandle]:
        if self._tracer is None:
            yield _SpanHandle(None)
            return
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k in (b"traceparent", b"tracestate")
        }
        ctx = _PROPAGATOR.extract(carrier)
        name = f"{scope['method']} {scope['path']}"
        with self._tracer.start_as_current_span(name, context=ctx, kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", scope["method"])
            span.set_attribute("url.path", scope["path"])
            span.set_attribute("modelplane.request_id", request_id)
            yield _SpanHandle(span)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def otlp_exporter(endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    base = endpoint.rstrip("/")
    return OTLPSpanExporter(endpoint=base if base.endswith("/v1/traces") else f"{base}/v1/traces")
