"""Rules for feedback: a user sees and links only what is theirs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from imgclf.api.feedback.schemas import FeedbackCreate
from imgclf.db.models import Feedback, Prediction


class PredictionNotFound(Exception):
    """No prediction with this id belongs to the user."""


def create_feedback(session: Session, *, user_id: int, data: FeedbackCreate) -> Feedback:
    if data.prediction_id is not None:
        prediction = session.get(Prediction, data.prediction_id)
        if prediction is None or prediction.user_id != user_id:
            raise PredictionNotFound(data.prediction_id)
    feedback = Feedback(user_id=user_id, **data.model_dump())
    session.add(feedback)
    session.flush()
    return feedback


def read_feedbacks(session: Session, *, user_id: int, limit: int, offset: int) -> list[Feedback]:
    """The user's feedback, newest first."""
    query = (
        select(Feedback)
        .where(Feedback.user_id == user_id)
        .order_by(Feedback.created_at.desc(), Feedback.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))


def get_feedback(session: Session, feedback_id: int) -> Feedback | None:
    return session.get(Feedback, feedback_id)
