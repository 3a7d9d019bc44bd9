"""Getting an answer for an upload (cache, then the queue), without holding a database
connection while the model works; and the row that records it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from imgclf.api.predictions.cache import PredictionCache, TopK
from imgclf.api.predictions.uploads import AcceptedUpload
from imgclf.db.models import Prediction
from imgclf.queue.base import (
    JobQueue,
    JobResult,
    JobTimeoutError,
    QueueFullError,
    QueueUnavailableError,
)


@dataclass(frozen=True, slots=True)
class Answer:
    top_k: TopK
    model_id: str
    cached: bool
    latency_ms: float
    result: JobResult | None = None


def http_error_for(error: Exception) -> HTTPException:
    """The queue's failures as the HTTP answers the API promises."""
    if isinstance(error, QueueFullError):
        return HTTPException(
            503, f"The service is busy: {error}.", headers={"Retry-After": str(error.retry_after_s)}
        )
    if isinstance(error, QueueUnavailableError):
        return HTTPException(
            503, f"The model service is unavailable: {error}.", headers={"Retry-After": "5"}
        )
    if isinstance(error, JobTimeoutError):
        return HTTPException(504, f"The model did not answer in time: {error}.")
    raise error


def raise_for_failed(result: JobResult) -> None:
    if not result.ok:
        raise HTTPException(
            result.status_code, result.error or "The image could not be classified."
        )


async def answer_upload(
    queue: JobQueue,
    cache: PredictionCache | None,
    upload: AcceptedUpload,
    *,
    owner: int,
    top_k: int,
    timeout_s: float,
    observe: Any = None,
) -> Answer:
    started = time.perf_counter()
    model_id = queue.model_id
    if cache is not None and model_id:
        hit = await cache.get(model_id, owner, upload.digest)
        if hit is not None:
            if observe is not None:
                observe.cache_hit()
            return Answer(hit[:top_k], model_id, True, (time.perf_counter() - started) * 1000)
    try:
        result = await queue.submit(upload.data, top_k=top_k, timeout_s=timeout_s)
    except (QueueFullError, QueueUnavailableError, JobTimeoutError) as error:
        if observe is not None:
            observe.reject(type(error).__name__)
        raise http_error_for(error) from None
    if observe is not None:
        observe.job_result(result, cache_miss=cache is not None)
    raise_for_failed(result)
    if cache is not None:
        await cache.put(result.model_id, owner, upload.digest, result.top_k)
    return Answer(
        result.top_k, result.model_id, False, (time.perf_counter() - started) * 1000, result
    )


def prediction_row(user_id: int, upload: AcceptedUpload, answer: Answer) -> dict[str, Any]:
    """The ``predictions`` row for an answer, as the recorder inserts it."""
    label, score = answer.top_k[0]
    return {
        "user_id": user_id,
        "image_file_name": upload.file_name,
        "image_bytes": len(upload.data),
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
