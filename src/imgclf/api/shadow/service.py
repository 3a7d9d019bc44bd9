"""Shadow figures from ``shadow_comparisons``, aggregated in SQL (sums and sums of squares, the
same on SQLite and PostgreSQL): per pair of versions, counts, shares and means with 95%
intervals."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, cast, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from imgclf.api.quality.service import wilson_interval
from imgclf.api.shadow.schemas import Agreement, DailyAgreement, Estimate, ShadowPair
from imgclf.db.models import ShadowComparison as Row

DIGITS = 4
# Student's t, two-sided 95%, by degrees of freedom; beyond the table the normal's 1.96 is
# within 2% of it.
_T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021,
         60: 2.000, 120: 1.980}  # fmt: skip


def t_95(degrees: int) -> float:
    """The table's value at the largest tabulated degrees not above ``degrees`` (a little wide,
    never narrow)."""
    known = [d for d in _T_95 if d <= degrees]
    return _T_95[max(known)] if degrees <= 120 else 1.95996


def mean_estimate(total: float, squares: float, count: int) -> Estimate:
    mean = total / count
    if count < 2:
        return Estimate(mean=round(mean, DIGITS), interval=None)
    variance = max(0.0, (squares - count * mean * mean) / (count - 1))
    half = t_95(count - 1) * math.sqrt(variance / count)
    return Estimate(
        mean=round(mean, DIGITS), interval=(round(mean - half, DIGITS), round(mean + half, DIGITS))
    )


def _sums(column: InstrumentedAttribute[Any]) -> list[ColumnElement[Any]]:
    return [func.sum(column), func.sum(column * column)]


def shadow_pairs(session: Session, model: str, since: datetime) -> list[ShadowPair]:
    statement = (
        select(
            Row.live,
            Row.candidate,
            func.count(),
            func.sum(cast(Row.agreed, Integer)),
            *_sums(Row.top5_overlap),
            *_sums(Row.score_difference),
            *_sums(Row.live_latency_ms),
            *_sums(Row.candidate_latency_ms),
        )
        .where(Row.model == model, Row.created_at >= since)
        .group_by(Row.live, Row.candidate)
        .order_by(Row.live, Row.candidate)
    )
    days = _agreement_by_day(session, model, since)
    pairs = []
    for row in session.execute(statement).all():
        live, candidate, count, agreed, *sums = row
        o, o2, d, d2, lt, lt2, ct, ct2 = (float(value) for value in sums)
        pairs.append(
            ShadowPair(
                live=live,
                candidate=candidate,
                comparisons=count,
                top1_agreement=_agreement(agreed, count),
                by_day=days.get((live, candidate), []),
                top5_overlap=mean_estimate(o, o2, count),
                score_difference=mean_estimate(d, d2, count),
                live_latency_ms=mean_estimate(lt, lt2, count),
                candidate_latency_ms=mean_estimate(ct, ct2, count),
            )
        )
    return pairs


def _agreement(agreed: int, count: int) -> Agreement:
    interval = wilson_interval(agreed, count)
    assert interval is not None  # a group has rows
    return Agreement(agreed=agreed, share=round(agreed / count, DIGITS), interval=interval)


def _agreement_by_day(
    session: Session, model: str, since: datetime
) -> dict[tuple[str, str], list[DailyAgreement]]:
    """Each pair's agreement per UTC day (times are stored in UTC; PostgreSQL would read a
    ``timestamptz``'s day in the session's zone)."""
    moment: ColumnElement[Any] = Row.created_at.expression
    if session.get_bind().dialect.name == "postgresql":
        moment = func.timezone("UTC", Row.created_at)
    day = func.date(moment)
    statement = (
        select(Row.live, Row.candidate, day, func.count(), func.sum(cast(Row.agreed, Integer)))
        .where(Row.model == model, Row.created_at >= since)
        .group_by(Row.live, Row.candidate, day)
        .order_by(Row.live, Row.candidate, day)
    )
    days: dict[tuple[str, str], list[DailyAgreement]] = {}
    for live, candidate, on, count, agreed in session.execute(statement).all():
        days.setdefault((live, candidate), []).append(
            DailyAgreement(day=str(on), comparisons=count, top1_agreement=_agreement(agreed, count))
        )
    return days
