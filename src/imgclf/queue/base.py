"""The queue's vocabulary: jobs, results, the API's side and the worker's side."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from imgclf.queue.models import ModelStatus


def new_job_id() -> str:
    return secrets.token_hex(16)  # as random as uuid4's hex, without building a UUID


@dataclass(slots=True)
class Job:
    """One image to classify. ``deadline`` is wall-clock epoch seconds: workers may be elsewhere."""

    id: str
    image: bytes
    deadline: float
    top_k: int = 5
    enqueued_at: float = field(default_factory=time.time)
    # The API request that submitted it, named in the worker's log lines about it.
    request_id: str = ""
    # The model version it was admitted for, ``name@version``: the one that computes it.
    model: str = ""
    # Its request's W3C traceparent when tracing is on: the worker's spans join that trace.
    traceparent: str = ""

    def expired(self, now: float | None = None) -> bool:
        return (now or time.time()) >= self.deadline


@dataclass(slots=True)
class JobResult:
    """A worker's answer: the top-k labels, or the error that belongs to this job alone."""

    job_id: str
    ok: bool
    top_k: list[tuple[str, float]] = field(default_factory=list)
    model_id: str = ""
    error: str | None = None
    status_code: int = 200
    batch_size: int = 0
    queue_ms: float = 0.0
    inference_ms: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobResult:
        data: dict[str, Any] = json.loads(raw)
        data["top_k"] = [(str(label), float(score)) for label, score in data.get("top_k", [])]
        return cls(**data)


class QueueError(Exception):
    """Why a job got no answer from the model."""


class QueueFullError(QueueError):
    """Too many jobs in flight: the caller should retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueUnavailableError(QueueError):
    """The queue cannot be reached (Redis down, or the service is stopping)."""


class JobTimeoutError(QueueError):
    """No answer before the job's deadline."""


class JobFailedError(QueueError):
    """A worker refused the job's image or could not process it; ``status_code`` says how."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class JobQueue(Protocol):
    """The API's side: submit a job and await its answer, without polling."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

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
        """Queue the image for ``model`` (``name@version``, from ``resolve``) and wait for its
        result; raises the errors above.

        ``keep_result_s``: how long the answer stays readable by job id (``stored_result``);
        by default a few deadlines, long enough for a caller whose notice was missed.
        ``counted=False``: work no caller waits for (a shadow copy), which never takes a
        caller's place in admission (``in_flight_for``); its submitter bounds it."""
        ...

    async def stored_result(self, job_id: str) -> JobResult | None:
        """A finished job's result while it is kept, for the async jobs API."""
        ...

    async def record_result(self, result: JobResult) -> None:
        """Keep a result the API itself decided (a job that failed before reaching a worker)."""
        ...

    async def remember_owner(self, job_id: str, owner_id: int, ttl_s: int) -> None: ...

    async def job_owner(self, job_id: str) -> int | None: ...

    async def readiness(self) -> dict[str, Any]:
        """{"queue": "ok" | reason, "workers": live workers, "model": model id | reason}."""
        ...

    async def depth(self, name: str | None = None) -> int:
        """Jobs waiting for a worker (for the model ``name``, or all)."""
        ...

    @property
    def in_flight(self) -> int:
        """Jobs this process submitted that have no answer yet."""
        ...

    def in_flight_for(self, name: str) -> int:
        """Those of them for the model ``name``."""
        ...

    async def resolve(self, name: str | None) -> str:
        """The live ``name@version`` of ``name`` (None: the default model), chosen now, at
        admission; raises UnknownModelError or ModelUnavailableError."""
        ...

    def workers_busy(self) -> float | None:
        """The share of the workers' time spent on batches lately (0 to 1): embedded, its own
        worker's; with Redis, what the workers' heartbeats said; None when not known."""
        ...

    async def model_statuses(self) -> list[ModelStatus]:
        """Every model: versions, the live one, workers serving it, jobs waiting."""
        ...

    async def promote(self, name: str, version: int) -> ModelStatus:
        """Make ``version`` the live one once the workers serving ``name`` have it loaded;
        raises UnknownModelError, ModelUnavailableError or PromotionError."""
        ...

    @property
    def default_model(self) -> str:
        """The model a request that names none gets."""
        ...

    @property
    def model_id(self) -> str | None:
        """The model the workers serve, once known."""
        ...


class JobSource(Protocol):
    """The worker's side: take jobs in batches, hand results back. Called from worker threads."""

    def take(self, max_jobs: int, max_wait_s: float, block_s: float) -> list[Job]:
        """Up to ``max_jobs`` jobs: waits up to ``block_s`` for the first one, then at most
        ``max_wait_s`` for more; an empty list when nothing came or the source is stopping."""
        ...

    def complete(self, results: list[JobResult]) -> None:
        """Deliver results to their callers (and acknowledge the jobs)."""
        ...

    def set_aside(self, results: list[JobResult]) -> None:
        """Deliver these failures and never run their jobs again (dead letters, in Redis)."""
        ...

    def discard(self, jobs: list[Job]) -> None:
        """Acknowledge jobs that will not be computed (past their deadline)."""
        ...
