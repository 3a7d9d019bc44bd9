"""In-process queue: the API's event loop on one side, the worker's threads on the other."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter, OrderedDict
from typing import Any, TypeVar

from imgclf.logs import current_request_id
from imgclf.queue.base import (
    Job,
    JobResult,
    JobTimeoutError,
    QueueFullError,
    QueueUnavailableError,
    new_job_id,
)
from imgclf.queue.keys import KEPT_JOBS_PER_OWNER, RESULT_TTL_S
from imgclf.tracing import current_traceparent

T = TypeVar("T")


class LocalQueue:
    """A bounded hand-off between asyncio callers and worker threads, with no polling.

    Callers await a future; the worker resolves it with ``call_soon_threadsafe``.
    """

    def __init__(
        self,
        max_pending: int,
        kept_results: int = 50_000,
        kept_per_owner: int = KEPT_JOBS_PER_OWNER,
    ) -> None:
        self.max_pending = max_pending
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._waiting: dict[str, asyncio.Future[JobResult]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = threading.Event()
        # Results and owners until they expire (monotonic seconds), at most ``kept_results``.
        self._results: OrderedDict[str, tuple[float, JobResult]] = OrderedDict()
        self._owners: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._kept_results = kept_results
        # Each owner's async jobs, oldest first: past ``kept_per_owner`` an owner's new job
        # pushes out that owner's oldest, so one account queuing jobs without end cannot push
        # out everyone else's answers (it could, at 70 jobs a second, with one shared bound).
        self._kept_per_owner = kept_per_owner
        self._jobs_of: dict[int, OrderedDict[str, None]] = {}
        self._tracked = 0  # ids in those lists
        self._keep_s: dict[str, float] = {}  # job id: how long its result is kept
        # Jobs awaited and jobs not yet taken, by model name: admission and depth per model.
        self._awaited = Counter[str]()
        self._queued = Counter[str]()
        self._queued_lock = threading.Lock()
        self.model_id: str = ""

    # The API's side -----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closed.clear()

    async def close(self) -> None:
        self._closed.set()
        self._jobs.put(None)  # wakes a worker blocked in take()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(QueueUnavailableError("the service is shutting down"))

    async def submit(
        self,
        image: bytes,
        *,
        top_k: int,
        timeout_s: float,
        job_id: str | None = None,
        keep_result_s: int | None = None,
        model: str = "",
        counted: bool = True,
    ) -> JobResult:
        if self._closed.is_set() or self._loop is None:
            raise QueueUnavailableError("the service is shutting down")
        name = model.rpartition("@")[0]
        awaited = self._awaited if counted else Counter[str]()
        if awaited[name] >= self.max_pending:
            raise QueueFullError(f"{self._awaited[name]} images are already waiting; retry shortly")
        job = Job(
            id=job_id or new_job_id(),
            image=image,
            deadline=time.time() + timeout_s,
            top_k=top_k,
            request_id=current_request_id.get(),
            model=model,
            traceparent=current_traceparent(),
        )
        future: asyncio.Future[JobResult] = self._loop.create_future()
        self._waiting[job.id] = future
        awaited[name] += 1
        # A job without an id of the caller's (a synchronous prediction) is read by nobody
        # later: keeping its result (0 s) would only give the garbage collector work.
        self._keep_s[job.id] = (keep_result_s or max(60, int(timeout_s * 6))) if job_id else 0
        with self._queued_lock:
            self._queued[name] += 1
        self._jobs.put(job)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise JobTimeoutError(f"no answer within {timeout_s:g} s") from None
        finally:
            # A caller that gave up frees its slot; the worker skips its job by deadline.
            self._waiting.pop(job.id, None)
            self._keep_s.pop(job.id, None)
            awaited[name] -= 1

    async def stored_result(self, job_id: str) -> JobResult | None:
        return _unexpired(self._results, job_id)

    async def record_result(self, result: JobResult) -> None:
        _put(self._results, result.job_id, result, RESULT_TTL_S, self._kept_results)

    async def remember_owner(self, job_id: str, owner_id: int, ttl_s: int) -> None:
        _put(self._owners, job_id, owner_id, ttl_s, self._kept_results)
        jobs = self._jobs_of.setdefault(owner_id, OrderedDict())
        jobs[job_id] = None
        self._tracked += 1
        while len(jobs) > self._kept_per_owner or next(iter(jobs)) not in self._owners:
            oldest, _ = jobs.popitem(last=False)  # pushed out, or expired already
            self._tracked -= 1
            self._owners.pop(oldest, None)
            self._results.pop(oldest, None)
        if self._tracked > 2 * self._kept_results:
            self._forget_gone_jobs()

    def _forget_gone_jobs(self) -> None:
        """Drop the ids of jobs no longer kept (expired, or past the shared bound) from every
        owner's list: otherwise those of owners who queue nothing more would stay for good."""
        for owner_id, jobs in list(self._jobs_of.items()):
            for gone in [job for job in jobs if job not in self._owners]:
                del jobs[gone]
            if not jobs:
                del self._jobs_of[owner_id]
        self._tracked = sum(len(jobs) for jobs in self._jobs_of.values())

    async def job_owner(self, job_id: str) -> int | None:
        return _unexpired(self._owners, job_id)

    @property
    def live_workers(self) -> int:
        """Workers taking jobs from this queue (none of its own)."""
        return 0

    async def readiness(self) -> dict[str, Any]:
        return {
            "queue": "ok" if not self._closed.is_set() else "closed",
            "workers": self.live_workers,
            "model": self.model_id or "not loaded",
        }

    async def depth(self, name: str | None = None) -> int:
        if name is None:
            return self._jobs.qsize()
        with self._queued_lock:
            return self._queued[name]

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def in_flight_for(self, name: str) -> int:
        return self._awaited[name]

    def workers_busy(self) -> float | None:
        """No worker of its own (``InProcessQueue``, built on it, has one)."""
        return None

    # The worker's side (threads) ----------------------------------------------------------

    def take(self, max_jobs: int, max_wait_s: float, block_s: float) -> list[Job]:
        try:
            first = self._jobs.get(timeout=block_s)
        except queue.Empty:
            return []
        if first is None:
            return []
        batch = [first]
        try:
            self._collect(batch, max_jobs, max_wait_s)
        finally:
            with self._queued_lock:
                self._queued.subtract(job.model.rpartition("@")[0] for job in batch)
        return batch

    def _collect(self, batch: list[Job], max_jobs: int, max_wait_s: float) -> None:
        wait_until = time.monotonic() + max_wait_s
        while len(batch) < max_jobs:
            try:
                remaining = wait_until - time.monotonic()
                job = (
                    self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # keep the stop signal for the next take()
                break
            batch.append(job)

    def complete(self, results: list[JobResult]) -> None:
        # Kept and delivered on the loop's thread, where the callers store and read results:
        # between a check and a write here, a caller could store a failure in between.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, results)

    def set_aside(self, results: list[JobResult]) -> None:
        """In process no job is ever retried: just deliver."""
        self.complete(results)

    def discard(self, jobs: list[Job]) -> None:
        """Nothing to acknowledge in process: the callers have already timed out."""

    def _deliver(self, results: list[JobResult]) -> None:
        for result in results:
            keep_s = self._keep_s.pop(result.job_id, RESULT_TTL_S)
            # Only where no result is, as in Redis: a failure its caller stored stays what the
            # job's owner reads.
            if keep_s > 0 and _unexpired(self._results, result.job_id) is None:
                _put(self._results, result.job_id, result, keep_s, self._kept_results)
            future = self._waiting.get(result.job_id)
            if future is not None and not future.done():
                future.set_result(result)


def _put(
    entries: OrderedDict[str, tuple[float, T]], key: str, value: T, ttl_s: float, most: int
) -> None:
    """Keep ``value`` for ``ttl_s``; drop the oldest entries past ``most`` or expired."""
    now = time.monotonic()
    entries[key] = (now + ttl_s, value)
    while entries and (len(entries) > most or next(iter(entries.values()))[0] <= now):
        entries.popitem(last=False)


def _unexpired(entries: OrderedDict[str, tuple[float, T]], key: str) -> T | None:
    entry = entries.get(key)
    if entry is None or entry[0] <= time.monotonic():
        return None
    return entry[1]
