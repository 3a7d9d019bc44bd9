"""/model: classify an upload now, list past predictions, or queue a job and read it later."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from imgclf.api.deps import (
    CurrentUser,
    DatabaseDep,
    OwnedJobId,
    PageDep,
    QueueDep,
    StateDep,
    TokenUserId,
    required_queue,
)
from imgclf.api.errors import error_responses, http_answer
from imgclf.api.predictions import service
from imgclf.api.predictions.form import UPLOAD_FORM_DOCS, read_upload_form
from imgclf.api.predictions.schemas import (
    JobAccepted,
    JobStatus,
    PredictionPublic,
    PredictionResponse,
    ScoredLabelPublic,
)
from imgclf.api.predictions.timing import server_timing
from imgclf.api.predictions.uploads import (
    AcceptedUpload,
    DigestCollisionError,
    StorageFullError,
    accept_upload,
)
from imgclf.api.state import AppState
from imgclf.api.users.service import AccountGoneError
from imgclf.queue.base import (
    JobFailedError,
    JobResult,
    JobTimeoutError,
    QueueFullError,
    QueueUnavailableError,
    new_job_id,
)
from imgclf.tracing import span

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/model", tags=["predictions"])

ModelChoice = Annotated[
    str | None,
    Query(
        max_length=100,
        description="The model to classify with (see GET /models); by default the default one.",
    ),
]
# Async jobs are kept this long for their owner to read.
JOB_TTL_S = 3600
STOPPED = "The service restarted before the image was classified; queue it again."


def _scored(top_k: list[tuple[str, float]]) -> list[ScoredLabelPublic]:
    return [ScoredLabelPublic(label=label, score=round(score, 4)) for label, score in top_k]


@router.post(
    "/predict",
    response_model=PredictionResponse,
    summary="Classify an image",
    responses=error_responses(400, 401, 404, 408, 413, 422, 429, 503, 504, 507),
    openapi_extra=UPLOAD_FORM_DOCS,
)
async def predict(
    request: Request,
    response: Response,
    user_id: TokenUserId,
    state: StateDep,
    model: ModelChoice = None,
) -> PredictionResponse:
    # The service's busiest route asks FastAPI for few dependencies: each is solved again for
    # every request, on the event loop every upload waits for (the queue, the cache and the
    # recorder as dependencies of their own cost 0.1 ms of its CPU a request).
    routed = time.perf_counter()
    settings = state.settings
    queue, cache, recorder = required_queue(state), state.cache, state.recorder
    upload = await accept_upload(await read_upload_form(request), settings)
    checked = time.perf_counter()
    model_ref = await queue.resolve(model)
    answer = await service.answer_upload(
        queue,
        cache,
        upload,
        owner=user_id,
        top_k=settings.top_k,
        timeout_s=settings.timeout_for(model_ref.rpartition("@")[0]),
        model=model_ref,
        observe=state.metrics,
    )
    # Recording also proves the account still exists (AccountGoneError: 401).
    with span("record"):
        row = service.prediction_row(user_id, upload, answer)
        recording = time.perf_counter()
        try:
            prediction_id = await recorder.record(row, upload)
        except AccountGoneError:
            # Deleted through another process: this one refuses the token from now on, before
            # the model runs for nobody again.
            state.tokens.forget_user(user_id)
            raise
        recorded_ms = (time.perf_counter() - recording) * 1000
    if state.shadow is not None:  # a copy for the model's candidate, if it has one; not awaited
        state.shadow.offer(upload, answer)
    label, score = answer.top_k[0]
    if settings.server_timing:
        response.headers["Server-Timing"] = server_timing(
            request.scope, routed, checked, answer, recorded_ms
        )
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
    responses=error_responses(400, 401, 404, 408, 413, 422, 429, 503, 507),
    openapi_extra=UPLOAD_FORM_DOCS,
)
async def create_job(
    request: Request,
    user: CurrentUser,
    state: StateDep,
    queue: QueueDep,
    model: ModelChoice = None,
) -> JobAccepted:
    upload = await accept_upload(await read_upload_form(request), state.settings)
    # The version is chosen now, at admission, whenever a worker gets to the job.
    model_ref = await queue.resolve(model)
    # Refused now rather than after the model: a job's answer could not be recorded then.
    (refusal,) = await run_in_threadpool(state.storage_quota.refusals, [(user.id, upload)])
    if refusal is not None:
        raise refusal
    waiting = queue.in_flight_for(model_ref.rpartition("@")[0])
    if waiting >= state.settings.max_pending:
        raise QueueFullError(f"{waiting} images are already waiting; retry shortly")
    job_id = new_job_id()
    await queue.remember_owner(job_id, user.id, JOB_TTL_S)
    # The image stays in this process until its answer comes: counted until then, and against
    # its user's share of the waiting.
    state.pending_bytes.hold(len(upload.data), user.id)
    state.waiting.hold(user.id)
    task = asyncio.create_task(_run_job(state, job_id, user.id, upload, model_ref))
    state.background_jobs.add(task)
    task.add_done_callback(state.background_jobs.discard)
    task.add_done_callback(lambda _: state.pending_bytes.release(len(upload.data), user.id))
    task.add_done_callback(lambda _: state.waiting.release(user.id))
    return JobAccepted(job_id=job_id)


async def _run_job(
    state: AppState, job_id: str, user_id: int, upload: AcceptedUpload, model: str
) -> None:
    """Wait for the job's answer and record it, after its request has been answered."""
    assert state.queue is not None  # create_job had it
    try:
        answer = await service.answer_upload(
            state.queue,
            None,
            upload,
            owner=user_id,
            top_k=state.settings.top_k,
            timeout_s=state.settings.timeout_for(model.rpartition("@")[0]),
            model=model,
            job_id=job_id,
            keep_result_s=JOB_TTL_S,
        )
    except JobFailedError:
        return  # the worker's answer is kept for the owner
    except asyncio.CancelledError:
        # The process stops before the answer came, and nothing here would record it: the
        # owner reads that it failed, and a worker's later answer (stored only where no result
        # is) does not turn it into "done" with nothing in the history.
        with contextlib.suppress(QueueUnavailableError):
            await state.queue.record_result(
                JobResult(job_id, ok=False, status_code=503, error=STOPPED, model_id=model)
            )
        raise
    except Exception as error:
        logger.warning("job %s failed before a worker answered: %s", job_id, error)
        status_code, detail = _failure(error)
        await state.queue.record_result(
            JobResult(job_id, ok=False, status_code=status_code, error=detail, model_id=model)
        )
        return
    if state.shadow is not None:
        state.shadow.offer(upload, answer)
    try:
        await state.recorder.record(service.prediction_row(user_id, upload, answer), upload)
    except AccountGoneError:
        logger.info("job %s: its account was deleted before the answer came", job_id)
        state.tokens.forget_user(user_id)
    except (StorageFullError, DigestCollisionError) as error:
        # Over the quota since it was queued (jobs queued together all pass the early check),
        # the disk refused it, or another picture has its name: the job fails as the same
        # upload to /model/predict would, instead of reading "done" with nothing recorded.
        # Its answer was readable meanwhile.
        logger.info("job %s: not recorded: %s", job_id, error)
        status_code, detail, _headers = http_answer(error)
        with contextlib.suppress(QueueUnavailableError):
            await state.queue.record_result(
                JobResult(job_id, ok=False, status_code=status_code, error=detail, model_id=model)
            )
    except Exception as error:  # the answer stays readable; only the history lacks it
        logger.warning("job %s: its prediction could not be recorded: %s", job_id, error)


def _failure(error: Exception) -> tuple[int, str]:
    """What the job's owner reads about a failure: the queue's own answers, nothing else."""
    if isinstance(error, QueueFullError | QueueUnavailableError | JobTimeoutError):
        status_code, detail, _headers = http_answer(error)
        return status_code, detail
    return 503, "The job could not be handed to a model worker; queue it again."


@router.get(
    "/jobs/{job_id}",
    response_model=JobStatus,
    summary="The state of a queued job, with its answer once done",
    responses=error_responses(401, 403, 404, 503),
)
async def read_job(job_id: OwnedJobId, queue: QueueDep) -> JobStatus:
    result = await queue.stored_result(job_id)
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
