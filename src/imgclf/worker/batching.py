"""The dynamic batching loop: batches formed when a lane frees up, run in parallel lanes.

A free lane takes whatever is queued (up to ``max_batch_size``, waiting at most
``max_batch_wait_ms`` for more), decodes that batch and makes one ONNX Runtime call for it. One
lane takes at a time, so batches leave the queue in arrival order and a source's ``take`` is
never called twice at once (its ``complete`` and ``set_aside`` are, from lanes that finish
together). While the lanes are busy, new jobs pile up in the queue, so batches grow with load
and stay at one under light load; and a worker never holds more jobs than it is running, so
other workers on the same Redis queue get them. (A feeder thread that formed batches for the
lanes cost a thread hop per batch: a wake-up, and a wait for the GIL while the API's thread
held it.)

How a lane uses the cores: alone (the other lanes idle), its model call spreads over all of the
model's threads, which gives a lone request the lowest latency. When other lanes are busy, each
call runs on one thread and the lanes share the cores, one decoding while another runs the
model: a call spread over every core waits at each layer for its slowest thread, so a core
taken by another lane stalls it. On 2 cores, two one-thread lanes decode and classify about a
third more images per second than one lane with two threads (docs/benchmarks.md). Pillow and
ONNX Runtime release the GIL, so the lanes run in parallel for real.

Several models share the lanes: a batch taken from the queue is split by the model version its
jobs name, and each part is one ONNX Runtime call of that version.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from imgclf.model.bundle import BundleError
from imgclf.model.classifier import Classifier
from imgclf.model.images import DecodeTimeoutError, ImageError, ImageLimits
from imgclf.queue.base import Job, JobResult, JobSource
from imgclf.tracing import job_span, record_job_span
from imgclf.worker.models import ModelSource

logger = logging.getLogger(__name__)
# Pause after an unexpected error in taking a batch, so a persistent one does not spin.
TAKE_RETRY_S = 1.0


@dataclass(slots=True)
class _Batch:
    jobs: list[Job]
    taken_at: float
    # Jobs whose image ran out of decoding time: answered and set aside, never retried.
    set_aside: set[str] = field(default_factory=set)
    # Jobs whose deadline passed while the images before them were decoded: dropped, as those
    # past it when the batch was taken are.
    expired: list[Job] = field(default_factory=list)


class BatchingWorker:
    """Runs ``lanes`` lane threads until ``stop()``; finishes what it has taken.

    ``models`` should be built with
    ``single_thread_runs=True`` when ``lanes`` > 1.
    """

    def __init__(
        self,
        source: JobSource,
        models: ModelSource,
        limits: ImageLimits,
        *,
        max_batch_size: int,
        max_batch_wait_ms: float,
        lanes: int = 1,
    ) -> None:
        self.source = source
        self.models = models
        self.limits = limits
        self.max_batch_size = max_batch_size
        self.max_batch_wait_s = max_batch_wait_ms / 1000
        self.lanes = max(1, lanes)
        self.jobs_done = 0
        self._taking = threading.Lock()  # held by the lane taking the next batch
        self._busy_lanes = 0
        # Lane-seconds spent on batches so far: how busy the worker is, read by its owner.
        self.busy_s = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._lane_threads: list[threading.Thread] = []

    def start(self) -> None:
        self._lane_threads = [
            threading.Thread(target=self._run_lane, name=f"imgclf-lane-{n}", daemon=True)
            for n in range(self.lanes)
        ]
        for thread in self._lane_threads:
            thread.start()

    def stop_taking(self) -> None:
        """Take no more batches; the lanes finish theirs (``stop`` waits for them)."""
        self._stopping.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop taking work, finish the batches already taken, then return."""
        self.stop_taking()
        deadline = time.monotonic() + timeout_s
        for thread in self._lane_threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        threads = self._lane_threads
        return bool(threads) and all(thread.is_alive() for thread in threads)

    def _next_batch(self) -> _Batch | None:
        """The next batch from the source, or None: when the worker is stopping, when nothing
        came in half a second (or the queue closed), when every job taken was past its
        deadline, or after an error. The lane then checks whether to stop, and takes again."""
        # Taken only when this lane can start on it: jobs wait in the queue, where the next free
        # lane (or another worker) picks them up, not in this worker's hands.
        with self._taking:
            if self._stopping.is_set():
                return None
            try:
                jobs = self._live_jobs(
                    self.source.take(self.max_batch_size, self.max_batch_wait_s, block_s=0.5)
                )
            except Exception:
                # The source's own errors (Redis away) are handled in take(); anything else is
                # logged and tried again after a pause, never the end of the worker.
                logger.exception("taking a batch failed; trying again")
                self._stopping.wait(TAKE_RETRY_S)
                return None
        return _Batch(jobs, time.time()) if jobs else None

    def _live_jobs(self, jobs: list[Job]) -> list[Job]:
        now = time.time()
        expired = [job for job in jobs if job.expired(now)]
        if expired:
            self._drop(expired)
            return [job for job in jobs if not job.expired(now)]
        return jobs

    def _drop(self, expired: list[Job]) -> None:
        # Their callers have had a 504 already: computing them helps nobody.
        logger.warning(
            "%d jobs past their deadline dropped: %s",
            len(expired),
            _named(expired),
            extra=_request_ids(expired),
        )
        self.source.discard(expired)

    def _run_lane(self) -> None:
        while not self._stopping.is_set():
            batch = self._next_batch()
            if batch is None:
                continue
            with self._lock:
                self._busy_lanes += 1
            started = time.perf_counter()
            try:
                results = self._classify(batch)
            except Exception:
                logger.exception(
                    "a batch of %d images failed in the model: %s",
                    len(batch.jobs),
                    _named(batch.jobs),
                    extra=_request_ids(batch.jobs),
                )
                results = [
                    JobResult(
                        job.id,
                        ok=False,
                        error="The model failed on this batch.",
                        status_code=500,
                        model_id=job.model,
                    )
                    for job in batch.jobs
                ]
            finally:
                with self._lock:
                    self._busy_lanes -= 1
                    self.busy_s += time.perf_counter() - started
            try:
                self._hand_back(batch, results)
            except Exception:
                # Unacknowledged on Redis, so taken over and answered again; in process the
                # callers get their 504. Either way this lane goes on.
                logger.exception(
                    "handing back %d answers failed: %s",
                    len(results),
                    _named(batch.jobs),
                    extra=_request_ids(batch.jobs),
                )
            finally:
                with self._lock:
                    self.jobs_done += len(results) - len(batch.expired)
            # Once the answers are on their way: the line is written while they travel.
            logger.info(
                "batch of %d: %s",
                len(batch.jobs),
                _named(batch.jobs),
                extra=_request_ids(batch.jobs),
            )

    def _hand_back(self, batch: _Batch, results: list[JobResult]) -> None:
        if batch.expired:
            self._drop(batch.expired)
        unanswered = batch.set_aside | {job.id for job in batch.expired}
        answered = [result for result in results if result.job_id not in unanswered]
        if answered:
            self.source.complete(answered)
        if batch.set_aside:
            self.source.set_aside([r for r in results if r.job_id in batch.set_aside])

    def _decode(self, classifier: Classifier, job: Job, batch: _Batch) -> np.ndarray | JobResult:
        """The model's input for this job, or its failure: a poison image fails alone, and
        one that runs out of decoding time frees its lane for the next."""
        model_id = classifier.model_id
        if job.expired(time.time()):
            # Past it while the images before it in the batch were decoded (costly ones take
            # up to the decoding limit each): dropped, its result never handed back.
            batch.expired.append(job)
            return JobResult(job.id, ok=False, status_code=504, model_id=model_id)
        try:
            with job_span(job.traceparent, "decode", **{"imgclf.job_id": job.id}):
                return classifier.preprocess(job.image, self.limits)
        except ImageError as error:
            if isinstance(error, DecodeTimeoutError):
                batch.set_aside.add(job.id)
            logger.info("job %s refused: %s", job.id, error, extra={"request_id": job.request_id})
            return JobResult(
                job.id, ok=False, error=str(error), status_code=error.status_code, model_id=model_id
            )
        except Exception:
            logger.exception(
                "decoding job %s failed unexpectedly", job.id, extra={"request_id": job.request_id}
            )
            return JobResult(
                job.id,
                ok=False,
                status_code=400,
                model_id=model_id,
                error="The image could not be decoded.",
            )

    def _classify(self, batch: _Batch) -> list[JobResult]:
        by_model: dict[str, list[Job]] = {}
        for job in batch.jobs:
            by_model.setdefault(job.model, []).append(job)
        results: dict[str, JobResult] = {}
        for model, jobs in by_model.items():
            try:
                classifier = self.models.classifier_for(model)
            except (BundleError, ValueError) as error:
                logger.error("model %s cannot be loaded: %s", model, error)
                for job in jobs:
                    results[job.id] = JobResult(
                        job.id,
                        ok=False,
                        status_code=503,
                        model_id=model,
                        error=f"The model {model} cannot be loaded by this worker.",
                    )
                continue
            results.update(self._classify_with(classifier, jobs, batch))
        return [results[job.id] for job in batch.jobs]

    def _classify_with(
        self, classifier: Classifier, jobs: list[Job], batch: _Batch
    ) -> dict[str, JobResult]:
        results: dict[str, JobResult] = {}
        good_jobs: list[Job] = []
        good_tensors: list[np.ndarray] = []
        for job in jobs:
            decoded = self._decode(classifier, job, batch)
            if isinstance(decoded, JobResult):
                results[job.id] = decoded
            else:
                good_jobs.append(job)
                good_tensors.append(decoded)
        if good_jobs:
            with self._lock:
                alone = self._busy_lanes == 1
            started, started_ns = time.perf_counter(), time.time_ns()
            top_k = max(job.top_k for job in good_jobs)
            answers = classifier.classify(
                np.stack(good_tensors), top_k=top_k, single_thread=not alone
            )
            inference_ms = (time.perf_counter() - started) * 1000
            _trace_inference(good_jobs, started_ns, classifier.model_id)
            for job, answer in zip(good_jobs, answers, strict=True):
                results[job.id] = JobResult(
                    job.id,
                    ok=True,
                    top_k=[(item.label, item.score) for item in answer[: job.top_k]],
                    model_id=classifier.model_id,
                    batch_size=len(good_jobs),
                    queue_ms=(batch.taken_at - job.enqueued_at) * 1000,
                    inference_ms=inference_ms,
                )
        return results


def _named(jobs: list[Job]) -> str:
    """Each job with the request that sent it, for a log line about several."""
    return ", ".join(f"job {job.id} (request {job.request_id or '-'})" for job in jobs)


def _request_ids(jobs: list[Job]) -> dict[str, object]:
    """``extra=`` for a log line about ``jobs``: their request ids (JSON logs list them)."""
    ids = [job.request_id for job in jobs if job.request_id]
    return {"request_ids": ids, "request_id": ids[0] if len(ids) == 1 else ""}


def _trace_inference(jobs: list[Job], started_ns: int, model_id: str) -> None:
    """One inference span in each traced job's trace: the batch they shared, and its size."""
    ended_ns = time.time_ns()
    for job in jobs:
        record_job_span(
            job.traceparent,
            "inference",
            started_ns,
            ended_ns,
            **{"imgclf.batch_size": len(jobs), "imgclf.model": model_id},
        )
