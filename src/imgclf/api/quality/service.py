"""Quality figures from ``predictions`` joined to ``feedbacks``, aggregated in SQL (the same
on SQLite and PostgreSQL): per model version, counts and shares with Wilson 95% intervals.

The unit is a user's judgement of a picture: one user's repeats of one picture (free of quota,
answered from the cache) count once, with the newest verdict. Counted per prediction, one
account sending one picture 300 times and marking each answer wrong took a version from 5 of 5
right to 5 of 305, with a tight interval, as if 305 independent marks agreed."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime

from sqlalchemy import (
    CTE,
    ColumnElement,
    String,
    case,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
)
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


def _judgements(window: list[ColumnElement[bool]]) -> CTE:
    """One row per model version, user and picture among the predictions in the window: the
    one with a verdict (right or wrong) given last, else any (unmarked). A named subquery that
    one statement reads twice: the databases compute it (and sort every prediction in the
    window) once."""
    without_verdict = case((Feedback.correct.is_(None), 1), else_=0)
    rank = func.row_number().over(
        partition_by=(Prediction.model_id, Prediction.user_id, Prediction.image_file_name),
        order_by=(without_verdict, Feedback.created_at.desc(), Prediction.id.desc()),
    )
    ranked = (
        select(
            Prediction.model_id,
            Prediction.user_id,
            Prediction.label,
            Feedback.correct,
            Feedback.correct_class,
            rank.label("rank"),
        )
        .outerjoin(Feedback, Feedback.prediction_id == Prediction.id)
        .where(*window)
        .subquery()
    )
    return select(ranked).where(ranked.c.rank == 1).cte("judgements")


Totals = tuple[str, int, int, int, int]  # model, judgements, right, wrong, judges
Corrected = tuple[str, str, str | None, int]  # model, predicted class, said to be, how often


def _figures(session: Session, judgements: CTE) -> tuple[list[Totals], list[Corrected]]:
    """Per model version, in one statement: its totals, ordered by model, and its answers
    marked wrong, counted per predicted class and correction."""
    j = judgements.c
    right = func.count(case((j.correct.is_(True), 1)))
    wrong = func.count(case((j.correct.is_(False), 1)))
    judges = func.count(func.distinct(case((j.correct.is_not(None), j.user_id))))
    no_class, zero = cast(null(), String), literal(0)
    count = func.count()
    totals = select(
        literal("total"), j.model_id, no_class, no_class, count, right, wrong, judges
    ).group_by(j.model_id)
    corrected = (
        select(literal("corrected"), j.model_id, j.label, j.correct_class, count, zero, zero, zero)
        .where(j.correct.is_(False))
        .group_by(j.model_id, j.label, j.correct_class)
    )
    model_totals: list[Totals] = []
    corrections: list[Corrected] = []
    for kind, model, label, said, rows, right_n, wrong_n, judge_n in session.execute(
        union_all(totals, corrected)
    ):
        if kind == "total":
            model_totals.append((model, rows, right_n, wrong_n, judge_n))
        else:
            corrections.append((model, label, said, rows))
    return sorted(model_totals), corrections


def _most_corrected(
    rows: list[Corrected], classes: int, corrections: int
) -> dict[str, list[CorrectedClass]]:
    """Per model: its predicted classes most often marked wrong, with what users said they were
    (one row per model, class and correction comes back from the database, not per feedback)."""
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
    judgements = _judgements(_in_window(Prediction.created_at, since, until))
    totals, wrong_rows = _figures(session, judgements)
    corrected = _most_corrected(wrong_rows, classes, corrections)
    models = []
    for model, predictions, right_count, wrong_count, judge_count in totals:
        unmarked = predictions - right_count - wrong_count
        marked = right_count + wrong_count
        models.append(
            ModelQuality(
                model=model,
                predictions=predictions,
                right=right_count,
                wrong=wrong_count,
                unmarked=unmarked,
                judges=judge_count,
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
