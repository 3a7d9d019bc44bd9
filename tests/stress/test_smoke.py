"""The stress run in miniature: the real service in both modes, Locust with 5 users for a few
seconds, through the same runner as `make stress`, so the locustfile and the runner cannot rot."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from stress_test.report import collect_environment, write_report
from stress_test.run_matrix import RunOptions, run_matrix
from stress_test.stack import StackConfig

pytestmark = pytest.mark.slow

SMOKE = RunOptions(warmup_s=0.5, measure_s=3, think_time_s=0.5)


def test_embedded_and_redis_runs_have_no_failures(
    model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    configs = (StackConfig("embedded"), StackConfig("redis", workers=1))
    runs = run_matrix(configs, (5,), SMOKE, tmp_path, model_dir, redis_url=redis_url)

    assert [run["config"] for run in runs] == ["embedded-b16", "redis-1w-b16"]
    for run in runs:
        assert run["failures"] == 0, run["failure_messages"]
        assert run["warmup"]["failures"] == 0, run["warmup"]["errors"]
        with Path(run["stats_csv"]).open() as handle:
            predict = [row for row in csv.DictReader(handle) if row["Name"] == "/model/predict"]
        assert predict, "no /model/predict row in Locust's CSV"
        assert int(predict[0]["Request Count"]) > 0
        assert run["service"]["jobs"] > 0  # the predictions reached a model worker
        assert run["cpu"]["processes"]["locust"] > 0
    assert "worker 1" in runs[1]["cpu"]["processes"]

    results = {
        "preset": "smoke",
        "command": "pytest tests/stress",
        "options": {**SMOKE.__dict__},
        "users": [5],
        "configs": [{"cache": False}],
        "environment": collect_environment(),
        "started": "2026-01-01T00:00:00",
        "duration_s": 1,
        "runs": runs,
    }
    report = write_report(results, tmp_path / "docs" / "report.md", tmp_path / "docs" / "img")
    text = report.read_text()
    assert "## Analysis" in text
    assert "![Throughput vs users" in text
    assert (tmp_path / "docs" / "img" / "stress-throughput.png").stat().st_size > 0
