"""docs/stress-test-report.md and docs/img/stress-*.png from a run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from bench.service import cpu_model

ROOT = Path(__file__).resolve().parents[1]


def collect_environment() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": psutil.cpu_count()}


def write_report(results: dict[str, Any]) -> Path:
    return ROOT / "docs" / "stress-test-report.md"
