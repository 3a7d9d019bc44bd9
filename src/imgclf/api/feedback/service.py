"""Rules for feedback: a user sees and links only what is theirs, and a prediction has one
current feedback, which a later one replaces."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from imgclf.api.feedback.classes import ClassList, ModelClass, UnknownClassError
from imgclf.api.feedback.schemas import FeedbackCreate
from imgclf.api.users.service import hold_user
from imgclf.db.base import utcnow
from imgclf.db.models import Feedback, Prediction, User

ClassLists = Callable[[str], ClassList | None]


# How the UI words a verdict in the feedback text: "Correct. ..." or "Wrong. Right class: X. ...".
_WORDED_VERDICT = re.compile(r"(Correct|Wrong)\.(?: Right class: (.{1,200}?)\.)?(?:\s|$)")


class PredictionNotFound(Exception):
    """No prediction of the user's has this id, or this image (the message says which)."""


class InvalidVerdict(ValueError):
    """``correct`` and ``correct_class`` contradict each other."""


class FeedbackQuotaExceeded(Exception):
    """The note would take its user's feedback past their quota (``str()`` says by how much)."""

    quota = "feedback"  # the user's own, counted apart from the service's faults


def note_bytes(note: str | None) -> int:
    """What a feedback note counts in its user's feedback quota."""
    return len((note or "").encode())


def count_note_bytes(session: Session, user_id: int, change: int) -> None:
    """Add ``change`` bytes to the user's feedback total (less where notes are gone); the total
    never goes below nothing."""
    if change:
        total = User.feedback_bytes + change
        session.execute(
            update(User)
            .where(User.id == user_id)
            .values(feedback_bytes=case((total > 0, total), else_=0))
            .execution_options(synchronize_session=False)
        )


def _prediction_for(session: Session, user_id: int, data: FeedbackCreate) -> Prediction:
    """The prediction named by id, or, for the seed's clients, the caller's newest prediction
    of the named image; the caller's own, else 404. Feedback on nothing the caller was answered
    is refused: every feedback row belongs to a prediction, so a user's rows are bounded by
    their history's (api.predictions.retention)."""
    if data.prediction_id is not None:
        prediction = session.get(Prediction, data.prediction_id)
        if prediction is None or prediction.user_id != user_id:
            raise PredictionNotFound(f"Prediction {data.prediction_id} not found")
        return prediction
    newest = session.scalars(
        select(Prediction)
        .where(Prediction.user_id == user_id, Prediction.image_file_name == data.image_file_name)
        .order_by(Prediction.created_at.desc(), Prediction.id.desc())
        .limit(1)
    ).first()
    if newest is None:
        raise PredictionNotFound(
            f"None of your predictions is of the image {data.image_file_name!r}: send the "
            "image_file_name or the prediction_id that a prediction's answer gave"
        )
    return newest


def _worded_verdict(
    data: FeedbackCreate, predicted: str, model: str, classes_of: ClassLists
) -> tuple[bool | None, ModelClass | None]:
    """The verdict of a client that puts it in words only (the UI's wording); a right class
    the model does not know stays in the words, never refused."""
    match = _WORDED_VERDICT.match(data.feedback)
    if match is None:
        return None, None
    if match.group(1) == "Correct":
        return True, None
    said, classes = match.group(2), classes_of(model)
    if said is None or classes is None:
        return False, None
    try:
        right_class = classes.resolve(said)
    except UnknownClassError:
        return False, None
    return (True, None) if right_class.name == predicted else (False, right_class)


def _verdict(
    data: FeedbackCreate, predicted: str, model: str, classes_of: ClassLists
) -> tuple[bool | None, ModelClass | None]:
    """``(correct, right class)``; a class given without ``correct`` says it: right if it is the
    predicted one. A class the model does not know raises ``UnknownClassError``."""
    if data.correct is None and data.correct_class is None:
        return _worded_verdict(data, predicted, model, classes_of)
    if data.correct_class is None:
        return data.correct, None
    classes = classes_of(model)
    given = (
        classes.resolve(data.correct_class)
        if classes is not None
        else ModelClass(data.correct_class.strip(), None)  # no labels on this disk
    )
    is_predicted = given.name == predicted
    if data.correct is True and not is_predicted:
        raise InvalidVerdict(
            f"correct is true but correct_class names {given.name}, not the predicted "
            f"{predicted}; send correct: false to correct the prediction"
        )
    if data.correct is False and is_predicted:
        raise InvalidVerdict(
            f"correct is false but correct_class is the predicted class {predicted}; "
            "name the right class, or leave correct_class out"
        )
    return is_predicted, None if is_predicted else given


def give_feedback(
    session: Session,
    *,
    user_id: int,
    data: FeedbackCreate,
    classes_of: ClassLists,
    byte_limit: int,
) -> Feedback:
    """Store the feedback, replacing the prediction's earlier one (same id, newest time), or
    raise FeedbackQuotaExceeded when the user's notes would take more than ``byte_limit``."""
    # Before the prediction's row, as a deletion takes them; exclusive, so that the user's
    # notes are counted one writer at a time.
    hold_user(session, user_id, exclusive=True)
    prediction = _prediction_for(session, user_id, data)
    _count_note(session, user_id, prediction.id, data.feedback, byte_limit)
    predicted, model = prediction.label, prediction.model_id
    correct, right_class = _verdict(data, predicted, model, classes_of)
    values: dict[str, Any] = {
        # The prediction's own, whatever the client says of it: the row describes that answer.
        "score": prediction.score,
        "predicted_class": predicted,
        "image_file_name": prediction.image_file_name,
        "feedback": data.feedback,
        "correct": correct,
        "correct_class": right_class.name if right_class else None,
        "correct_wnid": right_class.wnid if right_class else None,
        "created_at": utcnow(),
    }
    return _replace(session, {**values, "user_id": user_id, "prediction_id": prediction.id})


def _count_note(
    session: Session, user_id: int, prediction_id: int, note: str, byte_limit: int
) -> None:
    """Add the note to its user's feedback total, less the note it replaces; refuse a note that
    would take the total past ``byte_limit`` (a shorter one always passes)."""
    replaced = session.scalar(
        select(Feedback.feedback).where(Feedback.prediction_id == prediction_id)
    )
    added = note_bytes(note) - note_bytes(replaced)
    used = session.scalar(select(User.feedback_bytes).where(User.id == user_id)) or 0
    if added > 0 and used + added > byte_limit:
        left = max(0, byte_limit - used)
        raise FeedbackQuotaExceeded(
            f"Your feedback notes are full: this note needs {added / 1024:.1f} KB more than "
            f"the {left / 1024:.1f} KB left of your {byte_limit / 2**20:g} MB. A shorter note, "
            "or none, still records whether the answer was right."
        )
    count_note_bytes(session, user_id, added)


def _replace(session: Session, values: dict[str, Any]) -> Feedback:
    """Insert the prediction's feedback, or update the one it has, in one statement: two
    requests at once cannot both insert, nor update a row the other just replaced."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Feedback).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[Feedback.prediction_id],
        set_={field: statement.excluded[field] for field in values if field != "user_id"},
    )
    feedback_id = session.scalar(statement.returning(Feedback.id))
    feedback = session.get(Feedback, feedback_id, populate_existing=True)
    assert feedback is not None  # written by the statement above, in this transaction
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
