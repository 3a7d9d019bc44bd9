"""Getting an answer for an upload (cache, then the queue), without holding a database
connection while the model works; and the row that records it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imgclf.api.predictions.cache import PredictionCache, TopK
from imgclf.api.predictions.uploads import AcceptedUpload
from imgclf.db.models import Prediction
from imgclf.queue.base import (
    JobFailedError,
    JobQueue,
    JobTimeoutError,
    QueueFullError,
    QueueUnavailableError,
)
from imgclf.tracing import span

if TYPE_CHECKING:
    from imgclf.api.metrics import ServiceMetrics


@dataclass(frozen=True, slots=True)
class Answer:
    top_k: TopK
    model_id: str
    cached: bool
    # From the request for an answer to the answer, cache lookup included: the same for
    # synchronous predictions and async jobs.
    latency_ms: float
    # Of that, waiting for a worker to take the job, and the model's call (0 when cached).
    queue_ms: float = 0.0
    inference_ms: float = 0.0


async def answer_upload(
    queue: JobQueue,
    cache: PredictionCache | None,
    upload: AcceptedUpload,
    *,
    owner: int,
    top_k: int,
    timeout_s: float,
    model: str,
    observe: ServiceMetrics | None = None,
    job_id: str | None = None,
    keep_result_s: int | None = None,
) -> Answer:
    """The cached answer, else the answer of ``model`` (``name@version``, chosen at admission
    by ``queue.resolve``); raises the queue's errors, and JobFailedError when the worker
    refused the image."""
    started = time.perf_counter()
    model_id = model
    if cache is not None:
        hit = await cache.get(model_id, owner, upload.digest)
        if hit is not None:
            if observe is not None:
                observe.cache_hit(model)
            return Answer(hit[:top_k], model_id, True, (time.perf_counter() - started) * 1000)
    try:
        # The job carries this span's context: the worker's spans are its children.
        with span("queue wait"):
            result = await queue.submit(
                upload.data,
                top_k=top_k,
                timeout_s=timeout_s,
                job_id=job_id,
                keep_result_s=keep_result_s,
                model=model,
            )
    except (QueueFullError, QueueUnavailableError, JobTimeoutError) as error:
        if observe is not None:
            observe.reject(type(error).__name__, model)
        raise
    if observe is not None:
        observe.job_result(result, cache_miss=cache is not None)
    if not result.ok:
        raise JobFailedError(
            result.error or "The image could not be classified.", result.status_code
        )
    if cache is not None:
        await cache.put(result.model_id, owner, upload.digest, result.top_k)
    return Answer(
        result.top_k,
        result.model_id,
        False,
        (time.perf_counter() - started) * 1000,
        queue_ms=result.queue_ms or 0.0,
        inference_ms=result.inference_ms or 0.0,
    )


def prediction_row(user_id: int, upload: AcceptedUpload, answer: Answer) -> dict[str, Any]:
    """The ``predictions`` row for an answer, as the recorder inserts it."""
    label, score = answer.top_k[0]
    return {
        "user_id": user_id,
        "image_file_name": upload.file_name,
        "image_bytes": len(upload.data),
        "original_name": upload.original_name or None,
        "label": label,
        "score": round(score, 4),
        "top_k": [{"label": name, "score": value} for name, value in answer.top_k],
        "model_id": answer.model_id,
        "latency_ms": round(answer.latency_ms, 3),
        "cached": answer.cached,
    }


def read_predictions(session: Session, user_id: int, limit: int, offset: int) -> list[Prediction]:
    statement = (
        select(Prediction)
        .where(Prediction.user_id == user_id)
        .order_by(Prediction.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(statement))
