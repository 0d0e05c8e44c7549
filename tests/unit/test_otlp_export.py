"""Request spans reach an OTLP/HTTP collector.

The collector is a small HTTP server in the test that decodes the real OTLP
protobuf payload the SDK's exporter sends; no collector binary runs here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry

from modelplane.http.tracing import RequestTracer, otlp_exporter
from modelplane.server.app import MODELS_PATH, FrontSettings, ModelServerApp
from modelplane.server.lifecycle import Lifecycle
from modelplane.server.metrics import ServerMetrics


@pytest.fixture
def collector() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                received.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


async def test_spans_are_exported_over_otlp_http(
    collector: tuple[str, list[ExportTraceServiceRequest]],
) -> None:
    url, received = collector
    registry = CollectorRegistry()
    tracer = RequestTracer(otlp_exporter(url))
    front = ModelServerApp(
        FrontSettings(served_model_name="m"), Lifecycle(), ServerMetrics(registry), registry, tracer
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(front), base_url="http://t") as c:
        await c.get(MODELS_PATH, headers={"X-Request-Id": "otlp-1"})
    tracer.shutdown()  # flushes the batch processor
    spans = [
        span
        for request in received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert [s.name for s in spans] == [f"GET {MODELS_PATH}"]
    attributes = {a.key: a.value for a in spans[0].attributes}
    assert attributes["modelplane.request_id"].string_value == "otlp-1"
    assert attributes["http.response.status_code"].int_value == 503  # still loading
    service = received[0].resource_spans[0].resource.attributes
    assert any(
        a.key == "service.name" and a.value.string_value == "modelplane-server" for a in service
    )
