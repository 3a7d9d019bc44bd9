"""`imgclf worker`: model worker processes that take jobs from Redis, supervised as a group."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

import psutil

from imgclf.heap import freeze_startup_heap, return_large_blocks
from imgclf.launcher import environment
from imgclf.logs import configure_logging
from imgclf.model.images import ImageLimits
from imgclf.settings import Settings, get_settings
from imgclf.tracing import configure_tracing
from imgclf.worker.batching import BatchingWorker
from imgclf.worker.metrics import MeteredJobSource, WorkerMetrics
from imgclf.worker.models import LoadedModels
from imgclf.worker.versions import VersionKeeper

logger = logging.getLogger("imgclf.worker")

# A worker that retires itself (job count or memory limit) exits with this code and its
# supervisor starts a fresh one; jobs it held are acknowledged or taken over, never lost.
EXIT_RECYCLE = 75
# How long a recycled worker's last heartbeat stands for the fresh one that loads its models
# (a few seconds; longer on a busy machine). Should that one fail to start, callers wait for
# this long at most before being told no worker is running.
RECYCLE_HANDOVER_S = 15.0


def _stop_on_signals(stop: threading.Event, name: str) -> None:
    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("worker %s: %s received, draining", name, signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def worker_metrics(settings: Settings) -> WorkerMetrics:
    """This process's worker metrics, exported when ``IMGCLF_WORKER_METRICS_PORT`` is set."""
    metrics = WorkerMetrics()
    if settings.worker_metrics_port:
        metrics.serve(
            settings.queue_url, settings.worker_metrics_host, settings.worker_metrics_port
        )
    return metrics


def run_worker_process(
    settings: Settings,
    stop: threading.Event | None = None,
    metrics: WorkerMetrics | None = None,
) -> int:
    """One worker: load the live version of each model it serves (``IMGCLF_WORKER_MODELS``, by
    default all), then batch jobs until SIGTERM (drain, acknowledge, exit 0).

    ``stop`` and ``metrics`` outlive a recycled worker: a SIGTERM that arrives while the next
    one loads its model is not lost, and the next one counts on in the same exporter.
    """
    stop = stop or threading.Event()
    if settings.tracing:
        configure_tracing("imgclf-worker")
    lanes = settings.resolved_worker_concurrency
    # A job may wait up to its deadline, and a worker sees a flip up to a heartbeat late.
    grace_s = settings.longest_timeout_s + settings.worker_heartbeat_s * 2 + 1
    models = LoadedModels(settings, single_thread_runs=lanes > 1, grace_s=grace_s)
    names = settings.worker_models or models.catalogue.names
    unknown = sorted(set(names) - set(models.catalogue.names))
    if unknown:
        logger.error(
            "no model %s in the repository; it has: %s",
            ", ".join(unknown),
            ", ".join(models.catalogue.names),
        )
        return 2
    source = MeteredJobSource(
        settings.queue_url,
        models=names,
        visibility_timeout_s=settings.visibility_timeout_s,
        max_deliveries=settings.queue_max_deliveries,
        metrics=metrics or worker_metrics(settings),
    )
    _stop_on_signals(stop, source.name)
    heartbeat_ttl = settings.worker_heartbeat_ttl_s
    versions = VersionKeeper(source, models, names, heartbeat_ttl_s=heartbeat_ttl)
    versions.tick(wait=True)
    freeze_startup_heap()
    return_large_blocks()
    worker = BatchingWorker(
        source,
        models,
        ImageLimits.from_settings(settings),
        max_batch_size=settings.max_batch_size,
        max_batch_wait_ms=settings.max_batch_wait_ms,
        lanes=lanes,
    )
    worker.start()
    exit_code = _beat_until_stopped(settings, worker, source, versions, stop, models.loaded)
    worker.stop()
    _leave(source, versions, recycled=exit_code == EXIT_RECYCLE, heartbeat_ttl_s=heartbeat_ttl)
    logger.info("worker %s stopped after %d jobs", source.name, worker.jobs_done)
    return exit_code


def _leave(
    source: MeteredJobSource, versions: VersionKeeper, *, recycled: bool, heartbeat_ttl_s: float
) -> None:
    """Tell the queue this worker is gone (its lanes have finished, or ``stop`` gave up on
    them); then close the connection."""
    if recycled:
        # The fresh worker started next reads the same streams. Until its first heartbeat this
        # one's last stands for it, so callers are not told that no worker is running while it
        # loads its models (a lone worker's recycle answered 503s for that long).
        handover_s = max(heartbeat_ttl_s, RECYCLE_HANDOVER_S)
        source.heartbeat(handover_s, {**versions.report(), "busy": 0.0})
    else:
        # Retired after draining, not before: while its last heartbeat lasts, what it
        # finishes stays its own (others take over only the jobs of a worker without one).
        source.retire()
    source.close()


def _beat_until_stopped(
    settings: Settings,
    worker: BatchingWorker,
    source: MeteredJobSource,
    versions: VersionKeeper,
    stop: threading.Event,
    loaded: list[str],
) -> int:
    """Heartbeats (with the versions held and how busy the lanes were) until ``stop`` (0), a
    dead worker thread (1) or a reason to recycle (EXIT_RECYCLE)."""
    busy = BusyMeter(worker)
    heartbeat_ttl = settings.worker_heartbeat_ttl_s
    source.heartbeat(heartbeat_ttl, {**versions.report(), "busy": busy.share()})
    logger.info("worker %s ready with %s", source.name, ", ".join(loaded))
    while not stop.wait(settings.worker_heartbeat_s):
        if not worker.alive:
            logger.error("worker %s: a worker thread died; exiting to be restarted", source.name)
            return 1
        source.heartbeat(heartbeat_ttl, {**versions.report(), "busy": busy.share()})
        versions.tick()
        reason = _reason_to_recycle(settings, worker)
        if reason:
            logger.info("worker %s: %s, recycling", source.name, reason)
            return EXIT_RECYCLE
    return 0


def _reason_to_recycle(settings: Settings, worker: BatchingWorker) -> str | None:
    if settings.worker_max_jobs and worker.jobs_done >= settings.worker_max_jobs:
        return f"{worker.jobs_done} jobs done"
    limit_mb = settings.worker_max_rss_mb
    if limit_mb and psutil.Process().memory_info().rss > limit_mb * 2**20:
        return f"RSS above {limit_mb} MB"
    return None


def run_workers(settings: Settings, processes: int) -> int:
    """Run ``processes`` workers; more than one are child processes restarted when they die."""
    configure_logging(settings.log_format)
    if processes == 1:
        stop, metrics = threading.Event(), worker_metrics(settings)
        while True:
            code = run_worker_process(settings, stop, metrics)
            if code != EXIT_RECYCLE:
                return code
            if stop.is_set():  # asked to stop while retiring: do not start another
                return 0
            logger.info("starting a fresh worker in this process")
    return _supervise(settings, processes)


def _spawn(settings: Settings, processes: int, index: int) -> subprocess.Popen[bytes]:
    own = {
        "queue_url": settings.queue_url,
        "worker_concurrency": settings.worker_concurrency,
        "worker_models": settings.worker_models,
    }
    if settings.worker_metrics_port:  # one port each, from the one named on
        own |= {
            "worker_metrics_host": settings.worker_metrics_host,
            "worker_metrics_port": settings.worker_metrics_port + index,
        }
    env = environment(own)
    # The processes share this machine's cores, as lanes and model threads.
    env |= settings.worker_share_environment(processes)
    return subprocess.Popen([sys.executable, "-m", "imgclf.worker"], env=env)


def _supervise(settings: Settings, processes: int) -> int:
    stopping = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    children = [_spawn(settings, processes, index) for index in range(processes)]
    while not stopping.wait(0.5):
        for index, child in enumerate(children):
            code = child.poll()
            if code is not None:
                logger.warning("worker pid %d exited with %d; starting another", child.pid, code)
                time.sleep(0.5 if code == EXIT_RECYCLE else 2.0)  # no restart storm
                children[index] = _spawn(settings, processes, index)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    worst = 0
    for child in children:
        try:
            code = child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
        worst = max(worst, abs(code))
    return 0 if worst in (0, signal.SIGTERM) else 1


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_format)
    sys.exit(run_worker_process(settings))


class BusyMeter:
    """The share of the worker's lane time spent on batches since the last reading, for its
    heartbeat: the API makes shadow copies only while the workers have room."""

    def __init__(self, worker: BatchingWorker) -> None:
        self.worker = worker
        self._then, self._busy_then = time.monotonic(), worker.busy_s

    def share(self) -> float:
        now, busy_now = time.monotonic(), self.worker.busy_s
        elapsed = (now - self._then) * self.worker.lanes
        share = min(1.0, (busy_now - self._busy_then) / elapsed) if elapsed > 0 else 0.0
        self._then, self._busy_then = now, busy_now
        return round(share, 3)
