"""The dynamic batching loop: decode the next images while the model runs on the current batch.

Two stages joined by a hand-off of one batch. The feeder takes whatever is queued (up to
``max_batch_size``, waiting at most ``max_batch_wait_ms`` for more) and starts decoding it on a
thread pool; the runner stacks the decoded images and makes one ONNX Runtime call. While the
runner is busy, new jobs pile up in the queue, so batches grow with load and stay at one under
light load. Pillow and ONNX Runtime release the GIL, so both stages use the cores for real.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from imgclf.model import Classifier, ImageError, ImageLimits
from imgclf.queue.base import Job, JobResult, JobSource

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _DecodedBatch:
    jobs: list[Job]
    tensors: list[Future[np.ndarray]]
    taken_at: float


class BatchingWorker:
    """Runs the two stages on their own threads until ``stop()``; finishes what it has taken."""

    def __init__(
        self,
        source: JobSource,
        classifier: Classifier,
        limits: ImageLimits,
        *,
        max_batch_size: int,
        max_batch_wait_ms: float,
        decode_threads: int = 2,
        on_results: Callable[[list[JobResult]], None] | None = None,
    ) -> None:
        self.source = source
        self.classifier = classifier
        self.limits = limits
        self.max_batch_size = max_batch_size
        self.max_batch_wait_s = max_batch_wait_ms / 1000
        self.on_results = on_results
        self.jobs_done = 0
        self._decoder = ThreadPoolExecutor(decode_threads, thread_name_prefix="imgclf-decode")
        self._handoff: queue.Queue[_DecodedBatch | None] = queue.Queue(maxsize=1)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._feed, name="imgclf-feeder", daemon=True),
            threading.Thread(target=self._run, name="imgclf-runner", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop taking work, finish the batches already taken, then return."""
        self._stopping.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._decoder.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _feed(self) -> None:
        try:
            while not self._stopping.is_set():
                jobs = self.source.take(self.max_batch_size, self.max_batch_wait_s, block_s=0.5)
                if not jobs:
                    continue
                now = time.time()
                expired = [job for job in jobs if job.expired(now)]
                if expired:
                    # Their callers have had a 504 already: computing them helps nobody.
                    self.source.discard(expired)
                    jobs = [job for job in jobs if not job.expired(now)]
                    if not jobs:
                        continue
                tensors = [
                    self._decoder.submit(self.classifier.preprocess, job.image, self.limits)
                    for job in jobs
                ]
                self._handoff.put(_DecodedBatch(jobs, tensors, now))
        except Exception:
            logger.exception("the batch feeder stopped on an unexpected error")
        finally:
            self._handoff.put(None)

    def _run(self) -> None:
        while True:
            batch = self._handoff.get()
            if batch is None:
                return
            try:
                results = self._classify(batch)
            except Exception:
                logger.exception("a batch of %d images failed in the model", len(batch.jobs))
                results = [
                    JobResult(
                        job.id,
                        ok=False,
                        error="The model failed on this batch.",
                        status_code=500,
                        model_id=self.classifier.model_id,
                    )
                    for job in batch.jobs
                ]
            self.source.complete(results)
            self.jobs_done += len(results)
            if self.on_results is not None:
                self.on_results(results)

    def _classify(self, batch: _DecodedBatch) -> list[JobResult]:
        model_id = self.classifier.model_id
        results: dict[str, JobResult] = {}
        good_jobs: list[Job] = []
        good_tensors: list[np.ndarray] = []
        for job, future in zip(batch.jobs, batch.tensors, strict=True):
            try:
                good_tensors.append(future.result())
                good_jobs.append(job)
            except ImageError as error:
                results[job.id] = JobResult(
                    job.id,
                    ok=False,
                    error=str(error),
                    status_code=error.status_code,
                    model_id=model_id,
                )
            except Exception:
                # A poison image fails its own job, never the batch or the worker.
                logger.exception("decoding job %s failed unexpectedly", job.id)
                results[job.id] = JobResult(
                    job.id,
                    ok=False,
                    status_code=400,
                    model_id=model_id,
                    error="The image could not be decoded.",
                )
        if good_jobs:
            started = time.perf_counter()
            top_k = max(job.top_k for job in good_jobs)
            answers = self.classifier.classify(np.stack(good_tensors), top_k=top_k)
            inference_ms = (time.perf_counter() - started) * 1000
            for job, answer in zip(good_jobs, answers, strict=True):
                results[job.id] = JobResult(
                    job.id,
                    ok=True,
                    top_k=[(item.label, item.score) for item in answer[: job.top_k]],
                    model_id=model_id,
                    batch_size=len(good_jobs),
                    queue_ms=(batch.taken_at - job.enqueued_at) * 1000,
                    inference_ms=inference_ms,
                )
        return [results[job.id] for job in batch.jobs]
