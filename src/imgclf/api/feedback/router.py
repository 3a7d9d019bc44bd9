"""``/feedback/``: tell us whether a prediction was right; read back your own."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool

from imgclf.api.deps import (
    CurrentUser,
    DatabaseDep,
    PageDep,
    SettingsDep,
    id_path,
)
from imgclf.api.errors import error_responses
from imgclf.api.feedback import service
from imgclf.api.feedback.classes import UnknownClassError, find_class_list
from imgclf.api.feedback.schemas import FeedbackCreate, FeedbackPublic
from imgclf.db.models import Feedback

router = APIRouter(prefix="/feedback", tags=["feedback"])


@router.post(
    "/",
    summary="Say whether a prediction was right",
    response_model=FeedbackPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 404, 413, 422, 507),
)
async def create_feedback(
    body: FeedbackCreate, user: CurrentUser, db: DatabaseDep, settings: SettingsDep
) -> Feedback:
    """Record whether a prediction was right (``prediction_id``: one of yours; or, as the
    seed's clients do, ``image_file_name``: your newest prediction of that image; 404 when
    neither names one). A second feedback on the same prediction replaces the first, keeping
    its id."""
    give = partial(
        service.give_feedback,
        user_id=user.id,
        data=body,
        classes_of=partial(find_class_list, settings),
        byte_limit=settings.user_feedback_quota_mb * 2**20,
    )
    try:
        return await db.run(give)
    except UnknownClassError as error:  # worded here, off the loop: a search of the labels
        raise HTTPException(422, detail=await run_in_threadpool(str, error)) from None
    except service.InvalidVerdict as error:
        raise HTTPException(422, detail=str(error)) from None


@router.get(
    "/",
    summary="Your feedback, newest first",
    response_model=list[FeedbackPublic],
    responses=error_responses(401, 422),
)
async def read_feedbacks(user: CurrentUser, db: DatabaseDep, page: PageDep) -> list[Feedback]:
    """Your own feedback, newest first."""
    return await db.run(
        service.read_feedbacks, user_id=user.id, limit=page.limit, offset=page.offset
    )


@router.get(
    "/{feedback_id}",
    summary="One piece of your feedback",
    response_model=FeedbackPublic,
    responses=error_responses(401, 403, 404, 422),
)
async def read_feedback(
    feedback_id: Annotated[int, id_path("A feedback's id.")],
    user: CurrentUser,
    db: DatabaseDep,
) -> Feedback:
    """One feedback: your own, or anyone's if you are an admin."""
    feedback = await db.run(service.get_feedback, feedback_id)
    if feedback is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"Feedback {feedback_id} not found")
    if feedback.user_id != user.id and not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="You may only read your own feedback")
    return feedback
