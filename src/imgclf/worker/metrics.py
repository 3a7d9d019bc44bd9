"""A model worker's own Prometheus metrics (``IMGCLF_WORKER_METRICS_PORT``): what it computed,
in what batches, how long the model and the queue took, what it set aside or let expire, and
the dead letters waiting in Redis; every series labelled by worker and model. The process's
own series (``process_start_time_seconds`` among them) show restarts.

The exporter has no authentication: bind it to loopback or a private network.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from imgclf.queue.base import Job, JobResult
from imgclf.queue.keys import RedisKeys
from imgclf.queue.redis_source import RedisJobSource

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)
_LABELS = ("worker", "model")


class WorkerMetrics:
    """This process's worker series, in a registry of its own; exported by ``serve``."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.jobs = Counter(
            "imgclf_worker_jobs_total",
            "Jobs a worker handed back, by outcome (ok, failed, set_aside, expired)",
            [*_LABELS, "outcome"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "imgclf_worker_batch_size",
            "Images per model call",
            _LABELS,
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "imgclf_worker_inference_seconds",
            "Time of each model call",
            _LABELS,
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "imgclf_worker_queue_wait_seconds",
            "Time from submit until a worker took the job",
            _LABELS,
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )

    def serve(self, queue_url: str, host: str, port: int) -> None:
        """Export on ``host:port`` from a daemon thread, with the process's own series and the
        dead letters waiting in Redis."""
        ProcessCollector(registry=self.registry)
        self.registry.register(DeadLetters(queue_url, RedisKeys()))
        start_http_server(port, addr=host, registry=self.registry)


class DeadLetters(Collector):
    """The length of the dead-letter stream, read from Redis at each scrape."""

    def __init__(self, queue_url: str, keys: RedisKeys) -> None:
        self._redis = redis.Redis.from_url(queue_url, socket_timeout=2)
        self._key = keys.dead_letters

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            length = float(self._redis.xlen(self._key))
        except redis.RedisError:
            return  # absent rather than wrong; the queue's own alerts cover Redis being away
        yield GaugeMetricFamily(
            "imgclf_dead_letters", "Jobs in the dead-letter stream (capped)", value=length
        )


class MeteredJobSource(RedisJobSource):
    """The Redis job source, counting what the worker hands back through it (a few counter
    increments per batch, so always on; exported only when a port is set)."""

    def __init__(
        self,
        url: str,
        *,
        models: list[str],
        visibility_timeout_s: float,
        max_deliveries: int,
        metrics: WorkerMetrics,
    ) -> None:
        super().__init__(
            url,
            models=models,
            visibility_timeout_s=visibility_timeout_s,
            max_deliveries=max_deliveries,
        )
        self.metrics = metrics

    def complete(self, results: list[JobResult]) -> None:
        super().complete(results)
        # One batch may hold several models' jobs (a model call each): counted per model.
        for model in {result.model_id for result in results}:
            self._count([result for result in results if result.model_id == model])

    def _count(self, results: list[JobResult]) -> None:
        labels = (self.name, results[0].model_id)
        computed = [result for result in results if result.ok]
        self.metrics.jobs.labels(*labels, "ok").inc(len(computed))
        if len(computed) < len(results):
            self.metrics.jobs.labels(*labels, "failed").inc(len(results) - len(computed))
        if computed:
            self.metrics.batch_size.labels(*labels).observe(computed[0].batch_size)
            self.metrics.inference.labels(*labels).observe(computed[0].inference_ms / 1000)
        for result in computed:
            self.metrics.queue_wait.labels(*labels).observe(result.queue_ms / 1000)

    def set_aside(self, results: list[JobResult]) -> None:
        super().set_aside(results)
        for result in results:
            self.metrics.jobs.labels(self.name, result.model_id, "set_aside").inc()

    def discard(self, jobs: list[Job]) -> None:
        super().discard(jobs)
        for job in jobs:
            self.metrics.jobs.labels(self.name, job.model, "expired").inc()
