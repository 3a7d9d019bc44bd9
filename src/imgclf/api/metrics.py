"""Prometheus metrics: requests, latency, queue depth and wait, batch sizes, inference, cache.

Each app has its own registry (tests build many apps in one process). Batch sizes and
inference times travel with each job's result, so they are seen here in both modes, also
when the workers are other processes. With several uvicorn processes (``imgclf serve
--workers N``) every process writes its figures to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode, set up by ``imgclf serve``), and whichever process a
scrape reaches answers for all of them: counters add up, whatever process served a request.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import time
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, status
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgclf.api.errors import QUOTA_REFUSED, error_responses
from imgclf.api.state import app_state
from imgclf.queue.base import QueueError

if TYPE_CHECKING:
    from imgclf.queue.base import JobResult


# prometheus-client reads it when it is first imported: ``imgclf serve`` sets it before
# uvicorn starts its processes.
MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._define_http(self.registry)
        self._define_jobs(self.registry)
        self._define_models(self.registry)

    def _define_http(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "imgclf_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.quota_refusals = Counter(
            "imgclf_quota_refusals_total",
            "507 answers for the caller's own full quota (storage, feedback): counted in "
            "imgclf_http_requests_total too, but no fault of the service",
            ["quota"],
            registry=r,
        )
        self.latency = Histogram(
            "imgclf_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def _define_jobs(self, r: CollectorRegistry) -> None:
        # How several processes' gauges combine: the queue and the workers are shared, so the
        # latest reading is the truth; the jobs each process awaits add up.
        self.queue_depth = Gauge(
            "imgclf_queue_depth",
            "Jobs waiting for a worker",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.in_flight = Gauge(
            "imgclf_jobs_in_flight",
            "Jobs awaited by the API processes",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.workers = Gauge(
            "imgclf_workers", "Live model workers", registry=r, multiprocess_mode="mostrecent"
        )
        self.queue_wait = Histogram(
            "imgclf_queue_wait_seconds",
            "Time from submit to a worker",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "imgclf_inference_seconds",
            "Model time of the job's batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "imgclf_batch_size",
            "Size of the batch each job ran in",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter("imgclf_cache_hits_total", "Answers from the cache", registry=r)
        self.cache_misses = Counter(
            "imgclf_cache_misses_total", "Cache lookups that missed", registry=r
        )
        self.rejected = Counter(
            "imgclf_jobs_rejected_total",
            "Jobs refused or failed in the queue",
            ["reason"],
            registry=r,
        )
        self.job_errors = Counter(
            "imgclf_job_errors_total",
            "Jobs a worker answered with an error",
            ["status"],
            registry=r,
        )
        self.history_pruned = Counter(
            "imgclf_history_pruned_total",
            "Predictions removed from their users' history, past the newest IMGCLF_HISTORY_KEEP",
            registry=r,
        )

    def _define_models(self, r: CollectorRegistry) -> None:
        # Per model version (name@version): which one answered, and how.
        self.model_answers = Counter(
            "imgclf_model_answers_total",
            "Answers by model version and outcome (ok, cached, failed, refused)",
            ["model", "outcome"],
            registry=r,
        )
        self.model_queue_depth = Gauge(
            "imgclf_model_queue_depth",
            "Jobs waiting for a worker, by model name",
            ["model"],
            registry=r,
            multiprocess_mode="mostrecent",
        )

        # Shadow copies (api/shadow): each comparison made, and each copy not made, with why.
        self.shadow_comparisons = Counter(
            "imgclf_shadow_comparisons_total",
            "Uploads answered by a model's live version and by its shadow candidate",
            ["model", "candidate", "agreed"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "imgclf_shadow_dropped_total",
            "Shadow copies dropped: in_flight, load, busy, backlog, full, unavailable, timeout, "
            "failed, error, recorder",
            ["model", "reason"],
            registry=r,
        )

    def cache_hit(self, model: str) -> None:
        self.cache_hits.inc()
        self.model_answers.labels(model, "cached").inc()

    def reject(self, reason: str, model: str = "") -> None:
        self.rejected.labels(reason).inc()
        if model:
            self.model_answers.labels(model, "refused").inc()

    def job_result(self, result: JobResult, *, cache_miss: bool) -> None:
        if cache_miss:
            self.cache_misses.inc()
        if not result.ok:
            self.job_errors.labels(str(result.status_code)).inc()
            self.model_answers.labels(result.model_id, "failed").inc()
            return
        self.model_answers.labels(result.model_id, "ok").inc()
        self.batch_size.observe(result.batch_size)
        self.queue_wait.observe(result.queue_ms / 1000)
        self.inference.observe(result.inference_ms / 1000)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): counts and times every request by route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status)).inc()
            if quota := scope.get(QUOTA_REFUSED):
                self.metrics.quota_refusals.labels(quota).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - started)


router = APIRouter(tags=["operations"])


async def require_metrics_token(request: Request) -> None:
    """The figures (failed logins among them) go only to a scraper holding the token set in
    ``IMGCLF_METRICS_TOKEN``; with none set, nobody gets them."""
    token = app_state(request.app).settings.metrics_token.get_secret_value()
    if not token:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            "Metrics are turned off; set IMGCLF_METRICS_TOKEN and scrape with it "
            "as a bearer token.",
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Metrics need the bearer token set in IMGCLF_METRICS_TOKEN.",
            headers={"WWW-Authenticate": "Bearer"},
        )


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (with the metrics token)",
    responses=error_responses(401, 404),
)
async def read_metrics(
    request: Request, _allowed: Annotated[None, Depends(require_metrics_token)]
) -> Response:
    state = app_state(request.app)
    metrics, queue = state.metrics, state.queue
    if queue is not None:
        metrics.queue_depth.set(await queue.depth())
        with contextlib.suppress(QueueError):  # the figures of a scrape, never its failure
            for model in await queue.model_statuses():
                metrics.model_queue_depth.labels(model.name).set(model.queue_depth)
        metrics.in_flight.set(queue.in_flight)
        metrics.workers.set((await queue.readiness()).get("workers", 0))
    return Response(generate_latest(_registry_to_expose(metrics)), media_type=CONTENT_TYPE_LATEST)


def _registry_to_expose(metrics: ServiceMetrics) -> CollectorRegistry:
    """Every process's figures in multiprocess mode, else this app's own."""
    directory = os.environ.get(MULTIPROCESS_DIRECTORY)
    if not directory:
        return metrics.registry
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def install_metrics(app: FastAPI, metrics: ServiceMetrics) -> None:
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(router)
