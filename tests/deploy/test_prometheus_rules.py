"""deploy/prometheus: valid for Prometheus itself, and every alert unit-tested.

promtool comes with Debian's `prometheus` package, which `.ci/run` installs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import unavailable

PROMETHEUS = Path(__file__).parents[2] / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool is missing (Debian: apt-get install prometheus)")
    assert path is not None
    return path


def run(promtool: str, *args: str, cwd: Path = PROMETHEUS) -> str:
    result = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_config_and_its_rules_are_valid(promtool: str, tmp_path: Path) -> None:
    shutil.copytree(PROMETHEUS, tmp_path, dirs_exist_ok=True)
    (tmp_path / "metrics-token").write_text("the operator's token\n")  # a secret, not in git
    assert "SUCCESS" in run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)


def test_every_alert_fires_when_it_should_and_only_then(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "test", "rules", "rules.test.yml")
    alerts = {
        line.split(":", 1)[1].strip()
        for line in (PROMETHEUS / "rules.yml").read_text().splitlines()
        if line.strip().startswith("- alert:")
    }
    tested = (PROMETHEUS / "rules.test.yml").read_text()
    assert alerts, "no alert in rules.yml"
    assert {a for a in alerts if f"alertname: {a}" not in tested} == set(), "untested alerts"
