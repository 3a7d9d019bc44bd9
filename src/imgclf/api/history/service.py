"""Reading a user's history, and finding a prediction's stored image for its owner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imgclf.db.models import Feedback, Prediction


class PredictionImageNotFound(Exception):
    """No prediction with this id is the caller's (or an admin's to see)."""


@dataclass(frozen=True, slots=True)
class History:
    total: int
    items: list[dict[str, Any]]


def read_history(session: Session, user_id: int, limit: int, offset: int) -> History:
    """One page of the user's predictions, newest first, each with its latest feedback."""
    total = session.scalar(
        select(func.count()).select_from(Prediction).where(Prediction.user_id == user_id)
    )
    predictions = list(
        session.scalars(
            select(Prediction)
            .where(Prediction.user_id == user_id)
            .order_by(Prediction.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )
    latest: dict[int, Feedback] = {}
    if predictions:
        feedback = session.scalars(
            select(Feedback)
            .where(
                Feedback.user_id == user_id,
                Feedback.prediction_id.in_([p.id for p in predictions]),
            )
            .order_by(Feedback.id.desc())
        )
        for item in feedback:
            assert item.prediction_id is not None
            latest.setdefault(item.prediction_id, item)
    items = [
        {
            "id": p.id,
            "image_file_name": p.image_file_name,
            "original_name": p.original_name,
            "label": p.label,
            "score": p.score,
            "top_k": p.top_k,
            "model_id": p.model_id,
            "created_at": p.created_at,
            "feedback": latest.get(p.id),
        }
        for p in predictions
    ]
    return History(total=total or 0, items=items)


def image_file_name(session: Session, prediction_id: int, user_id: int, is_admin: bool) -> str:
    """The stored file of a prediction the caller may see; another user's is "not found"
    too, so ids do not tell which exist."""
    row = session.execute(
        select(Prediction.user_id, Prediction.image_file_name).where(Prediction.id == prediction_id)
    ).one_or_none()
    if row is None or (row.user_id != user_id and not is_admin):
        raise PredictionImageNotFound(prediction_id)
    return str(row.image_file_name)
