"""The admin page's charts, from answers shaped as the API gives them."""

from __future__ import annotations

from imgclf.api.shadow import schemas as api
from imgclf.ui.admin_charts import (
    agreement_by_day_chart,
    agreement_chart,
    quality_chart,
    quality_rows,
)
from imgclf.ui.client import QualityReport, ShadowReport
from tests.ui.conftest import Account
from tests.ui.test_admin_view import give_feedback
from tests.ui_api import ApiForTests

# GET /models/{name}/shadow as its schema describes it (docs: design/api.md), extra figures
# included: the page reads the setting and each pair's top-1 agreement.
SHADOW_ANSWER = {
    "model": "efficientnet-lite0",
    "candidate": "efficientnet-lite0-int8@1",
    "fraction": 0.1,
    "days": 7,
    "pairs": [
        {
            "live": "efficientnet-lite0@1",
            "candidate": "efficientnet-lite0-int8@1",
            "comparisons": 40,
            "top1_agreement": {"agreed": 38, "share": 0.95, "interval": [0.835, 0.986]},
            "top5_overlap": {"mean": 4.6, "interval": [4.4, 4.8]},
            "score_difference": {"mean": -0.01, "interval": [-0.02, 0.0]},
            "live_latency_ms": {"mean": 9.1, "interval": None},
            "candidate_latency_ms": {"mean": 4.2, "interval": None},
        }
    ],
}


def test_the_quality_chart_has_a_share_and_an_interval_per_verdict(
    api: ApiForTests, api_url: str, account: Account, admin: Account
) -> None:
    give_feedback(api_url, account, "second-model", correct=False)
    report = api.quality(admin.token)
    assert isinstance(report, QualityReport), report
    rows = quality_rows(report)
    ours = rows[rows["version"] == "second-model@1"].set_index("verdict")
    assert list(ours.index) == ["right", "wrong", "unmarked"]
    assert (ours["low"] <= ours["share"]).all()
    assert (ours["share"] <= ours["high"]).all()
    assert ours.loc["wrong", "count"] >= 1
    assert (
        ours.loc["wrong", "label"]
        == f"{ours.loc['wrong', 'share']:.0%} ({ours.loc['wrong', 'count']})"
    )
    spec = quality_chart(report).to_dict()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar", "errorbar", "text"]
    # A version nobody marked draws nothing: its intervals would span most of the axis.
    silent = report.models[0].model_copy(update={"model": "silent@1", "judges": 0})
    with_silent = report.model_copy(update={"models": [*report.models, silent]})
    assert "silent@1" not in set(quality_rows(with_silent)["version"])


def test_the_agreement_chart_reads_the_shadow_answer() -> None:
    report = ShadowReport.model_validate(SHADOW_ANSWER)
    spec = agreement_chart(report.pairs).to_dict()
    (data,) = spec["datasets"].values()
    assert data == [
        {
            "pair": "efficientnet-lite0@1 vs efficientnet-lite0-int8@1",
            "share": 0.95,
            "low": 0.835,
            "high": 0.986,
            "comparisons": 40,
        }
    ]


def test_the_day_by_day_chart_reads_the_api_schema() -> None:
    """The API's own schema, dumped as it answers, read by the page: one point per day."""
    answer = api.ShadowReport.model_validate(
        {
            **SHADOW_ANSWER,
            "pairs": [
                {
                    **SHADOW_ANSWER["pairs"][0],  # type: ignore[index]
                    "by_day": [
                        {
                            "day": "2026-11-29",
                            "comparisons": 10,
                            "top1_agreement": {"agreed": 9, "share": 0.9, "interval": [0.6, 0.98]},
                        },
                        {
                            "day": "2026-11-30",
                            "comparisons": 30,
                            "top1_agreement": {
                                "agreed": 29,
                                "share": 0.9667,
                                "interval": [0.83, 0.99],
                            },
                        },
                    ],
                }
            ],
        }
    )
    report = ShadowReport.model_validate_json(answer.model_dump_json())
    spec = agreement_by_day_chart(report.pairs).to_dict()
    (data,) = spec["datasets"].values()
    assert [(row["day"], row["share"], row["comparisons"]) for row in data] == [
        ("2026-11-29", 0.9, 10),
        ("2026-11-30", 0.9667, 30),
    ]
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["area", "line"]
