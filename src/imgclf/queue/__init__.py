"""How a job reaches a model worker and its answer comes back: in-process or through Redis."""

from imgclf.queue.base import (
    Job,
    JobFailedError,
    JobQueue,
    JobResult,
    JobSource,
    JobTimeoutError,
    QueueFullError,
    QueueUnavailableError,
)

__all__ = [
    "Job",
    "JobFailedError",
    "JobQueue",
    "JobResult",
    "JobSource",
    "JobTimeoutError",
    "QueueFullError",
    "QueueUnavailableError",
]
