"""OpenTelemetry traces (IMGCLF_TRACING=true) from real processes, exported by the SDK's OTLP/HTTP
exporter to a collector in the test that decodes what it receives: one trace per request with
spans for parse, queue wait, decode, inference and record, across Redis to the worker too."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support import ServedApi, start_worker, stop_process, wait_for_workers
from tests.test_logs import predict, sign_up


class Collector:
    """An OTLP/HTTP trace receiver on loopback: keeps every span with its service's name."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        collector = self

        class Receive(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector._keep(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    with self._lock:
                        self.spans.append(
                            {
                                "service": attributes.get("service.name", ""),
                                "name": span.name,
                                "trace": span.trace_id.hex(),
                                "id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "attributes": {a.key: a.value for a in span.attributes},
                            }
                        )

    def trace_of(
        self, request_id: str, names: set[str], timeout_s: float = 30
    ) -> list[dict[str, Any]]:
        """The spans of the trace whose server span names ``request_id``, once they include
        every one of ``names`` (exporters send in batches)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                roots = [
                    s
                    for s in self.spans
                    if s["attributes"].get("imgclf.request_id")
                    and s["attributes"]["imgclf.request_id"].string_value == request_id
                ]
                spans = [s for s in self.spans if roots and s["trace"] == roots[0]["trace"]]
            if names <= {s["name"] for s in spans}:
                return spans
            seen = sorted(span["name"] for span in spans)
            assert time.monotonic() < deadline, f"{request_id}: only {seen}"
            time.sleep(0.2)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    collector = Collector()
    # The processes under test inherit these: export there, in small batches, soon.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    try:
        yield collector
    finally:
        collector.close()


def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    named = {span["name"]: span for span in spans}
    assert len(named) == len(spans), [span["name"] for span in spans]  # one of each
    return named


STAGES = {"POST /model/predict", "parse", "queue wait", "decode", "inference", "record"}


def assert_one_request(named: dict[str, dict[str, Any]]) -> None:
    root = named["POST /model/predict"]
    assert root["parent"] == ""
    assert root["attributes"]["http.route"].string_value == "/model/predict"
    assert root["attributes"]["http.response.status_code"].int_value == 200
    # FastAPI's span of the endpoint, under the server span, holds the service's own stages.
    assert named["fastapi.endpoint"]["parent"] == root["id"]
    for stage in ("parse", "queue wait", "record"):
        assert named[stage]["parent"] == named["fastapi.endpoint"]["id"], stage
    for stage in ("decode", "inference"):  # the worker's, under the wait for it
        assert named[stage]["parent"] == named["queue wait"]["id"], stage
    assert named["inference"]["attributes"]["imgclf.batch_size"].int_value == 1


def test_embedded_service_traces_each_stage_of_a_request(
    collector: Collector, model_dir: Path, tmp_path: Path
) -> None:
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        model_dir=model_dir,
        model_threads=1,
        cache=False,  # the second answer is the model's too
        tracing=True,
    ) as api:
        auth = sign_up(api.url)
        answers = [predict(api.url, {**auth, "X-Request-ID": f"traced-{n}"}) for n in range(2)]
        assert [answer.status_code for answer in answers] == [200, 200]
        first = collector.trace_of("traced-0", STAGES)
        second = collector.trace_of("traced-1", STAGES)
    assert first[0]["trace"] != second[0]["trace"]  # one trace per request
    named = by_name(first)
    assert_one_request(named)
    assert {span["service"] for span in first} == {"imgclf-api"}


def test_a_trace_crosses_redis_to_the_worker_that_computed_the_job(
    collector: Collector, redis_url: str, model_dir: Path, tmp_path: Path
) -> None:
    worker = start_worker(redis_url, model_dir, tmp_path / "worker.log", tracing=True)
    try:
        with ServedApi(
            tmp_path / "api.log", tmp_path / "data", queue_url=redis_url, tracing=True
        ) as api:
            wait_for_workers(redis_url, 1)
            answer = predict(api.url, {**sign_up(api.url), "X-Request-ID": "traced-redis"})
            assert answer.status_code == 200, answer.text
            spans = collector.trace_of("traced-redis", STAGES)
    finally:
        stop_process(worker)
    named = by_name(spans)
    assert_one_request(named)
    assert named["decode"]["service"] == named["inference"]["service"] == "imgclf-worker"
    assert named["record"]["service"] == "imgclf-api"


def test_without_tracing_no_span_is_built_and_no_traceparent_is_made() -> None:
    """In a process that traces nothing, the request's spans are not even built (they cost the
    event loop 5-8% of its time per upload), and the traceparent a job would carry is empty."""
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from imgclf.tracing import current_traceparent, span, tracing

        assert not tracing()
        with span("parse") as inside:
            assert inside is None
            assert not trace.get_current_span().get_span_context().is_valid
            assert current_traceparent() == ""
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
