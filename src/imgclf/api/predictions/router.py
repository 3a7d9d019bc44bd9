"""/model: classify an upload now, list past predictions, or queue a job and read it later."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Request, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from imgclf.api.deps import CurrentUser, DatabaseDep, PageDep, TokenUserId, credentials_error
from imgclf.api.errors import error_responses
from imgclf.api.predictions import service
from imgclf.api.predictions.recorder import AccountGoneError
from imgclf.api.predictions.schemas import (
    JobAccepted,
    JobStatus,
    PredictionPublic,
    PredictionResponse,
    ScoredLabelPublic,
)
from imgclf.api.predictions.uploads import AcceptedUpload, accept_upload
from imgclf.queue.base import (
    JobQueue,
    JobResult,
    JobTimeoutError,
    QueueFullError,
    QueueUnavailableError,
    new_job_id,
)

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/model", tags=["predictions"])

ImageUpload = Annotated[
    UploadFile,
    File(description="The image: JPEG, PNG, GIF, WebP or BMP, at most the upload size limit."),
]
# Async jobs are kept this long for their owner to read.
JOB_TTL_S = 3600


def _queue(request: Request) -> JobQueue:
    queue: JobQueue | None = getattr(request.app.state, "queue", None)
    if queue is None:
        raise HTTPException(503, "No model worker is configured for this service.")
    return queue


def _scored(top_k: list[tuple[str, float]]) -> list[ScoredLabelPublic]:
    return [ScoredLabelPublic(label=label, score=round(score, 4)) for label, score in top_k]


@router.post(
    "/predict",
    response_model=PredictionResponse,
    summary="Classify an image",
    responses=error_responses(400, 401, 413, 422, 503, 504, 507),
)
async def predict(request: Request, user_id: TokenUserId, file: ImageUpload) -> PredictionResponse:
    state = request.app.state
    settings = state.settings
    upload = await accept_upload(file, settings)
    answer = await service.answer_upload(
        _queue(request),
        state.prediction_cache,
        upload,
        owner=user_id,
        top_k=settings.top_k,
        timeout_s=settings.predict_timeout_s,
        observe=state.metrics,
    )
    try:
        prediction_id = await state.recorder.record(
            service.prediction_row(user_id, upload, answer), upload
        )
    except AccountGoneError:  # deleted since its token was issued
        raise credentials_error() from None
    label, score = answer.top_k[0]
    return PredictionResponse(
        prediction=label,
        score=round(score, 4),
        image_file_name=upload.file_name,
        top_k=_scored(answer.top_k),
        prediction_id=prediction_id,
        model=answer.model_id,
        cached=answer.cached,
    )


@router.get(
    "/predictions",
    response_model=list[PredictionPublic],
    summary="Your past predictions, newest first",
    responses=error_responses(401, 422),
)
async def read_predictions(db: DatabaseDep, user: CurrentUser, page: PageDep) -> list[Any]:
    return await db.run(service.read_predictions, user.id, page.limit, page.offset)


@router.post(
    "/jobs",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue an image and read its answer later",
    responses=error_responses(400, 401, 413, 422, 503, 507),
)
async def create_job(request: Request, user: CurrentUser, file: ImageUpload) -> JobAccepted:
    state = request.app.state
    queue = _queue(request)
    upload = await accept_upload(file, state.settings)
    # Refused now rather than after the model: a job's answer could not be recorded then.
    (refusal,) = await run_in_threadpool(state.storage_quota.refusals, [(user.id, upload)])
    if refusal is not None:
        raise refusal
    if queue.in_flight >= state.settings.max_pending:
        raise HTTPException(
            503, "The service is busy; retry shortly.", headers={"Retry-After": "1"}
        )
    job_id = new_job_id()
    try:
        await queue.remember_owner(job_id, user.id, JOB_TTL_S)
    except Exception as error:
        raise service.http_error_for(error) from None
    # The image stays in this process until its answer comes: counted until then.
    state.pending_bytes.hold(len(upload.data))
    task = asyncio.create_task(_run_job(request, job_id, user.id, upload))
    state.background_jobs.add(task)
    task.add_done_callback(state.background_jobs.discard)
    task.add_done_callback(lambda _: state.pending_bytes.release(len(upload.data)))
    return JobAccepted(job_id=job_id)


async def _run_job(request: Request, job_id: str, user_id: int, upload: AcceptedUpload) -> None:
    state = request.app.state
    settings = state.settings
    queue = _queue(request)
    try:
        result = await queue.submit(
            upload.data,
            top_k=settings.top_k,
            timeout_s=settings.predict_timeout_s,
            job_id=job_id,
            keep_result_s=JOB_TTL_S,
        )
    except Exception as error:
        logger.warning("job %s failed before a worker answered: %s", job_id, error)
        status_code, detail = _failure(error)
        await queue.record_result(
            JobResult(job_id, ok=False, status_code=status_code, error=detail)
        )
        return
    if result.ok:
        answer = service.Answer(result.top_k, result.model_id, False, result.inference_ms, result)
        try:
            await state.recorder.record(service.prediction_row(user_id, upload, answer), upload)
        except AccountGoneError:
            logger.info("job %s: its account was deleted before the answer came", job_id)
        except Exception as error:  # the answer stays readable; only the history lacks it
            logger.warning("job %s: its prediction could not be recorded: %s", job_id, error)


def _failure(error: Exception) -> tuple[int, str]:
    """What the job's owner reads about a failure: the queue's own answers, nothing else."""
    if isinstance(error, QueueFullError | QueueUnavailableError | JobTimeoutError):
        answer = service.http_error_for(error)
        return answer.status_code, str(answer.detail)
    return 503, "The job could not be handed to a model worker; queue it again."


@router.get(
    "/jobs/{job_id}",
    response_model=JobStatus,
    summary="The state of a queued job, with its answer once done",
    responses=error_responses(401, 403, 404, 503),
)
async def read_job(request: Request, user: CurrentUser, job_id: str) -> JobStatus:
    queue = _queue(request)
    try:
        owner = await queue.job_owner(job_id)
        if owner is None:
            raise HTTPException(404, f"Job {job_id} not found")
        if owner != user.id:
            raise HTTPException(403, "This job belongs to another user")
        result = await queue.stored_result(job_id)
    except HTTPException:
        raise
    except Exception as error:
        raise service.http_error_for(error) from None
    if result is None:
        return JobStatus(job_id=job_id, status="pending")
    if not result.ok:
        return JobStatus(job_id=job_id, status="failed", error=result.error, model=result.model_id)
    label, score = result.top_k[0]
    return JobStatus(
        job_id=job_id,
        status="done",
        prediction=label,
        score=round(score, 4),
        top_k=_scored(result.top_k),
        model=result.model_id,
    )
