"""Quality figures from ``predictions`` joined to ``feedbacks``, aggregated in SQL (the same
on SQLite and PostgreSQL): per model version, counts and shares with Wilson 95% intervals."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from imgclf.api.quality.schemas import (
    CorrectedClass,
    Correction,
    Interval,
    ModelQuality,
    QualityReport,
)
from imgclf.db.models import Feedback, Prediction

Z_95 = 1.959963984540054
SHARE_DIGITS = 4


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval | None:
    """Wilson score interval: unlike the normal approximation it stays inside [0, 1] and
    means something for small counts and shares near 0 or 1."""
    if trials == 0:
        return None
    share = successes / trials
    denominator = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials**2))
    return (
        round(max(0.0, centre - half), SHARE_DIGITS),
        round(min(1.0, centre + half), SHARE_DIGITS),
    )


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, SHARE_DIGITS) if whole else None


def _in_window(
    column: InstrumentedAttribute[datetime], since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    conditions = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


def _most_corrected(
    session: Session, window: list[ColumnElement[bool]], classes: int, corrections: int
) -> dict[str, list[CorrectedClass]]:
    """Per model: its predicted classes most often marked wrong, with what users said they were
    (one row per model, class and correction comes back from the database, not per feedback)."""
    rows = session.execute(
        select(Prediction.model_id, Prediction.label, Feedback.correct_class, func.count())
        .join(Feedback, Feedback.prediction_id == Prediction.id)
        .where(Feedback.correct.is_(False), *window)
        .group_by(Prediction.model_id, Prediction.label, Feedback.correct_class)
    ).all()
    grouped: dict[str, dict[str, list[Correction]]] = defaultdict(lambda: defaultdict(list))
    for model, label, correct_class, count in rows:
        grouped[model][label].append(Correction(correct_class=correct_class, count=count))
    answer: dict[str, list[CorrectedClass]] = {}
    for model, by_label in grouped.items():
        ranked = sorted(
            (
                CorrectedClass(
                    predicted_class=label,
                    wrong=sum(c.count for c in said),
                    corrected_to=sorted(said, key=lambda c: (-c.count, c.correct_class or "~"))[
                        :corrections
                    ],
                )
                for label, said in by_label.items()
            ),
            key=lambda item: (-item.wrong, item.predicted_class),
        )
        answer[model] = ranked[:classes]
    return answer


def model_quality(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    classes: int = 5,
    corrections: int = 3,
) -> QualityReport:
    """Every model version with predictions made in ``[since, until)``."""
    window = _in_window(Prediction.created_at, since, until)
    right = func.count(case((Feedback.correct.is_(True), 1)))
    wrong = func.count(case((Feedback.correct.is_(False), 1)))
    totals = session.execute(
        select(Prediction.model_id, func.count(Prediction.id), right, wrong)
        .outerjoin(Feedback, Feedback.prediction_id == Prediction.id)
        .where(*window)
        .group_by(Prediction.model_id)
        .order_by(Prediction.model_id)
    ).all()
    corrected = _most_corrected(session, window, classes, corrections)
    models = []
    for model, predictions, right_count, wrong_count in totals:
        unmarked = predictions - right_count - wrong_count
        marked = right_count + wrong_count
        models.append(
            ModelQuality(
                model=model,
                predictions=predictions,
                right=right_count,
                wrong=wrong_count,
                unmarked=unmarked,
                right_share=_share(right_count, predictions),
                interval=wilson_interval(right_count, predictions),
                wrong_share=_share(wrong_count, predictions),
                wrong_interval=wilson_interval(wrong_count, predictions),
                unmarked_share=_share(unmarked, predictions),
                unmarked_interval=wilson_interval(unmarked, predictions),
                right_when_marked=_share(right_count, marked),
                right_when_marked_interval=wilson_interval(right_count, marked),
                most_corrected=corrected.get(model, []),
            )
        )
    unlinked = session.scalar(
        select(func.count(Feedback.id)).where(
            Feedback.prediction_id.is_(None), *_in_window(Feedback.created_at, since, until)
        )
    )
    return QualityReport(since=since, until=until, models=models, unlinked_feedback=unlinked or 0)
