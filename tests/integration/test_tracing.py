"""A trace per message, across processes: the services export their spans over OTLP/HTTP to a
receiver in this test (the protocol a collector speaks), and one message's spans (accept,
due, validate, smtp, from ingest, timer, validator and sender) share the trace its submitter
started, each the child of the step before."""

from __future__ import annotations

import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from kairos.ports import free_port
from tests.integration.conftest import Stack, scheduled_email

pytestmark = pytest.mark.kafka


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP (protobuf) trace receiver that keeps every span it is sent."""

    def __init__(self, port: int) -> None:
        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    attrs = {a.key: a.value.string_value for a in resource.resource.attributes}
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append(
                                {
                                    "service": attrs.get("service.name"),
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                }
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)


def test_one_message_is_one_trace_across_the_four_services(stack: Stack) -> None:
    port = free_port()
    receiver = Receiver(port)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        stack.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
        stack.env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
        stack.start("sink", "ingest", "timer", "validator", "sender")
        _, key = stack.create_account("traced")
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        r = httpx.post(
            f"{stack.http}/email",
            headers={"Authorization": f"Bearer {key}", "traceparent": f"00-{trace_id}-{parent}-01"},
            json=scheduled_email(int(time.time()) + 2, subject="traced"),
            timeout=30,
        )
        assert r.status_code == 202, r.text
        wanted = {"accept": "ingest", "due": "timer", "validate": "validator", "smtp": "sender"}

        def ours() -> dict[str, dict[str, Any]]:
            return {s["name"]: s for s in list(receiver.spans) if s["trace_id"] == trace_id}

        deadline = time.monotonic() + 120
        while not set(wanted) <= set(ours()) and time.monotonic() < deadline:
            time.sleep(0.5)
        spans = ours()  # with the web framework's own spans of the request
        assert set(wanted) <= set(spans), spans
        for name, service in wanted.items():
            assert spans[name]["service"] == f"kairos-{service}"
        assert spans["accept"]["parent"] == parent
        assert spans["due"]["parent"] == spans["accept"]["span_id"]
        assert spans["validate"]["parent"] == spans["due"]["span_id"]
        assert spans["smtp"]["parent"] == spans["validate"]["span_id"]
    finally:
        receiver.shutdown()
