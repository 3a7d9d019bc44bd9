"""The shadow figures from known comparisons, on SQLite and PostgreSQL: rows handed to the
comparison recorder come back as the counts, shares and intervals computed here by hand."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imgclf.api.quality.service import wilson_interval
from imgclf.api.shadow.recorder import ComparisonRecorder
from imgclf.api.shadow.service import shadow_pairs
from imgclf.db.engine import Database, make_engine
from imgclf.db.migrate import upgrade
from imgclf.settings import Settings

T_95_3 = 3.182  # Student's t, 3 degrees of freedom, two-sided 95%


def _row(
    agreed: bool, overlap: int, difference: float, live_ms: float, **kw: Any
) -> dict[str, Any]:
    return {
        "model": "lite",
        "live": "lite@1",
        "candidate": "lite-int8@1",
        "agreed": agreed,
        "top5_overlap": overlap,
        "score_difference": difference,
        "live_latency_ms": live_ms,
        "candidate_latency_ms": 5.0,
        **kw,
    }


def _interval(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    half = T_95_3 * statistics.stdev(values) / math.sqrt(len(values))
    return pytest.approx(mean - half, abs=1e-4), pytest.approx(mean + half, abs=1e-4)


def test_figures_from_known_comparisons(database_url: str) -> None:
    database = Database(make_engine(Settings(database_url=database_url)))
    upgrade(database.engine)
    dropped: list[dict[str, Any]] = []
    recorder = ComparisonRecorder(database, on_dropped=dropped.append)
    recorder.start()
    rows = [
        _row(True, 5, 0.1, 10.0),
        _row(True, 4, -0.1, 20.0),
        _row(False, 2, 0.2, 30.0),
        _row(True, 5, 0.0, 40.0),
        _row(False, 1, -0.5, 99.0, candidate="lite@2"),  # another pair
        _row(False, 1, -0.5, 99.0, model="other"),  # another model
    ]
    for row in rows:
        recorder.record(row)
    recorder.close()
    recorder.record(_row(True, 5, 0.0, 1.0))  # after close: dropped, never lost silently
    with database.transaction(writes=False) as session:
        pairs = shadow_pairs(session, "lite", datetime.now(UTC) - timedelta(days=1))
        later = shadow_pairs(session, "lite", datetime.now(UTC) + timedelta(seconds=1))
    database.dispose()

    assert [(p.live, p.candidate, p.comparisons) for p in pairs] == [
        ("lite@1", "lite-int8@1", 4),
        ("lite@1", "lite@2", 1),
    ]
    pair = pairs[0]
    assert pair.top1_agreement.agreed == 3
    assert pair.top1_agreement.share == 0.75
    assert pair.top1_agreement.interval == wilson_interval(3, 4)
    assert pair.top5_overlap.mean == 4.0
    assert pair.top5_overlap.interval == _interval([5, 4, 2, 5])
    assert pair.score_difference.mean == pytest.approx(0.05)
    assert pair.score_difference.interval == _interval([0.1, -0.1, 0.2, 0.0])
    assert pair.live_latency_ms.mean == 25.0
    assert pair.live_latency_ms.interval == _interval([10, 20, 30, 40])
    assert (pair.candidate_latency_ms.mean, pair.candidate_latency_ms.interval) == (5.0, (5.0, 5.0))
    assert pairs[1].top5_overlap.interval is None  # one comparison: no interval
    assert later == []
    assert len(dropped) == 1


def test_agreement_day_by_day(database_url: str) -> None:
    """Each pair's agreement per UTC day, oldest first, with its own interval."""
    database = Database(make_engine(Settings(database_url=database_url)))
    upgrade(database.engine)
    recorder = ComparisonRecorder(database, on_dropped=lambda _row: None)
    recorder.start()
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    two_days_ago = today - timedelta(days=2)
    for agreed, when in [(True, two_days_ago), (False, two_days_ago), (True, today)]:
        recorder.record(_row(agreed, 5, 0.0, 10.0, created_at=when))
    recorder.close()
    with database.transaction(writes=False) as session:
        (pair,) = shadow_pairs(session, "lite", today - timedelta(days=7))
    database.dispose()

    assert [(d.day, d.comparisons, d.top1_agreement.agreed) for d in pair.by_day] == [
        (two_days_ago.date().isoformat(), 2, 1),
        (today.date().isoformat(), 1, 1),
    ]
    assert pair.by_day[0].top1_agreement.interval == wilson_interval(1, 2)
