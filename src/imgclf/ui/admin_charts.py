"""The admin page's charts: shares with their 95% intervals as error bars."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from imgclf.ui.client import QualityReport, ShadowPair

VERDICTS = ["right", "wrong", "unmarked"]
VERDICT_COLORS = ["#2e7d32", "#c62828", "#9e9e9e"]
AGREEMENT_COLOR = "#1565c0"
INTERVAL_COLOR = "#212121"


def quality_rows(report: QualityReport) -> pd.DataFrame:
    """One row per model version and verdict: its share, interval, count and the label its
    bar carries. Versions nobody has marked are left out: all unmarked, their intervals for
    right and wrong spanned most of the axis and said nothing."""
    rows = []
    for quality in report.models:
        if quality.judges == 0:
            continue
        figures = {
            "right": (quality.right_share, quality.interval, quality.right),
            "wrong": (quality.wrong_share, quality.wrong_interval, quality.wrong),
            "unmarked": (quality.unmarked_share, quality.unmarked_interval, quality.unmarked),
        }
        for verdict, (share, interval, count) in figures.items():
            if share is None or interval is None:
                continue
            low, high = interval
            rows.append(
                {
                    "version": quality.model,
                    "verdict": verdict,
                    "share": share,
                    "low": low,
                    "high": high,
                    "count": count,
                    "label": f"{share:.0%} ({count})",
                }
            )
    columns = ["version", "verdict", "share", "low", "high", "count", "label"]
    return pd.DataFrame(rows, columns=columns)


def quality_chart(report: QualityReport) -> alt.LayerChart:
    """Per version, a bar for each verdict's share with its interval as an error bar."""
    data = quality_rows(report)
    base = alt.Chart(data).encode(
        y=alt.Y("version:N", title=None, axis=alt.Axis(labelLimit=220)),
        yOffset=alt.YOffset("verdict:N", sort=VERDICTS),
        tooltip=[
            alt.Tooltip("version:N"),
            alt.Tooltip("verdict:N"),
            alt.Tooltip("count:Q"),
            alt.Tooltip("share:Q", format=".1%"),
            alt.Tooltip("low:Q", format=".1%", title="95% from"),
            alt.Tooltip("high:Q", format=".1%", title="95% to"),
        ],
    )
    bars = base.mark_bar().encode(
        x=alt.X("share:Q", title="share of its answers", axis=alt.Axis(format="%")),
        color=alt.Color(
            "verdict:N",
            sort=VERDICTS,
            scale=alt.Scale(domain=VERDICTS, range=VERDICT_COLORS),
            legend=alt.Legend(orient="top", title=None),
        ),
    )
    errors = base.mark_errorbar(ticks=True, color=INTERVAL_COLOR).encode(
        x=alt.X("low:Q", title="share of its answers", scale=alt.Scale(domain=[0, 1])),
        x2="high:Q",
    )
    # Each bar's share and count in words, past the end of its interval.
    labels = base.mark_text(align="left", dx=4, fontSize=11).encode(
        x=alt.X("high:Q"), text="label:N"
    )
    chart: alt.LayerChart = (bars + errors + labels).properties(height=alt.Step(18))
    return chart


def agreement_chart(pairs: Sequence[ShadowPair]) -> alt.LayerChart:
    """Top-1 agreement of each candidate with the live version, with its interval."""
    data = pd.DataFrame(
        [
            {
                "pair": f"{pair.live} vs {pair.candidate}",
                "share": pair.top1_agreement.share,
                "low": pair.top1_agreement.interval[0],
                "high": pair.top1_agreement.interval[1],
                "comparisons": pair.comparisons,
            }
            for pair in pairs
        ]
    )
    base = alt.Chart(data).encode(
        y=alt.Y("pair:N", title=None, axis=alt.Axis(labelLimit=300)),
        tooltip=[
            alt.Tooltip("pair:N"),
            alt.Tooltip("comparisons:Q"),
            alt.Tooltip("share:Q", format=".1%", title="top-1 agreement"),
        ],
    )
    bars = base.mark_bar(color=AGREEMENT_COLOR).encode(
        x=alt.X("share:Q", title="top-1 agreement", axis=alt.Axis(format="%"))
    )
    errors = base.mark_errorbar(ticks=True, color=INTERVAL_COLOR).encode(
        x=alt.X("low:Q", title="top-1 agreement", scale=alt.Scale(domain=[0, 1])),
        x2="high:Q",
    )
    chart: alt.LayerChart = (bars + errors).properties(height=alt.Step(28))
    return chart


def agreement_by_day_chart(pairs: Sequence[ShadowPair]) -> alt.LayerChart:
    """Each candidate's top-1 agreement day by day: a line with its 95% band."""
    data = pd.DataFrame(
        [
            {
                "pair": f"{pair.live} vs {pair.candidate}",
                "day": day.day,
                "share": day.top1_agreement.share,
                "low": day.top1_agreement.interval[0],
                "high": day.top1_agreement.interval[1],
                "comparisons": day.comparisons,
            }
            for pair in pairs
            for day in pair.by_day
        ],
        columns=["pair", "day", "share", "low", "high", "comparisons"],
    )
    base = alt.Chart(data).encode(
        x=alt.X("day:T", title=None, axis=alt.Axis(format="%b %d")),
        color=alt.Color("pair:N", legend=alt.Legend(orient="top", title=None)),
        tooltip=[
            alt.Tooltip("pair:N"),
            alt.Tooltip("day:T", format="%Y-%m-%d"),
            alt.Tooltip("comparisons:Q"),
            alt.Tooltip("share:Q", format=".1%", title="top-1 agreement"),
        ],
    )
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("low:Q", title="top-1 agreement", scale=alt.Scale(domain=[0, 1])), y2="high:Q"
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("share:Q", title="top-1 agreement", axis=alt.Axis(format="%"))
    )
    chart: alt.LayerChart = (band + line).properties(height=220)
    return chart
