"""A load run through ``imgclf serve`` (its own process, the real FP32 and INT8 models) with a
shadow set on every upload: the figures the API answers are those of a direct offline
comparison of the same photos with the project's Classifier."""

from __future__ import annotations

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from imgclf.cli import app as cli
from imgclf.launcher import imgclf_command
from imgclf.model import ImageLimits, load_bundle
from imgclf.model.classifier import Classifier
from tests.api.test_shadow import LITE0, _link_bundle
from tests.support import ServedApi, sample_photos

INT8 = "efficientnet-lite0-int8"
PHOTOS = 40
ADMIN = {"username": "admin@example.com", "password": "admin"}


@pytest.fixture(scope="module")
def fp32_and_int8(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with efficientnet-lite0@1 and efficientnet-lite0-int8@1: the built one
    beside the FP32 bundle when there is one, else quantized here from the packaged photos."""
    root = tmp_path_factory.mktemp("fp32-int8")
    _link_bundle(model_dir, root / LITE0 / "1", name=LITE0, version=1)
    built = model_dir.parents[1] / INT8 / "1"
    if (built / "bundle.json").exists():
        _link_bundle(built, root / INT8 / "1")
    else:
        command = [*imgclf_command(), "quantize", "--repository", str(root), "--version", "1"]
        subprocess.run(command, check=True, capture_output=True, timeout=300)
    return root


def _offline(repository: Path, photos: list[bytes]) -> list[tuple[list[str], list[str], float]]:
    """Per photo: FP32's top-5 labels, INT8's, and INT8's top-1 score minus FP32's."""
    fp32 = Classifier(load_bundle(repository / LITE0 / "1"), threads=1)
    int8 = Classifier(load_bundle(repository / INT8 / "1"), threads=1)
    figures = []
    for data in photos:
        (live,) = fp32.classify_bytes([data], ImageLimits(), 5)
        (candidate,) = int8.classify_bytes([data], ImageLimits(), 5)
        assert isinstance(live, list), live
        assert isinstance(candidate, list), candidate
        figures.append(
            (
                [s.label for s in live],
                [s.label for s in candidate],
                candidate[0].score - live[0].score,
            )
        )
    return figures


@pytest.mark.slow
def test_shadow_figures_match_an_offline_comparison(tmp_path: Path, fp32_and_int8: Path) -> None:
    photos = sample_photos(PHOTOS)
    api = ServedApi(
        tmp_path / "serve.log",
        tmp_path / "data",
        model_repository=fp32_and_int8,
        default_model=LITE0,
        cache=False,
        model_threads=1,
        worker_concurrency=1,
        # Every upload copied, however busy: the counts must be exact.
        shadow_max_waiting=1000,
        shadow_max_in_flight=1000,
        metrics_token="test-metrics-token",
    )
    try:
        token = httpx.post(f"{api.url}/login", data=ADMIN).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        set_by_cli = CliRunner().invoke(
            cli,
            ["models", "shadow", LITE0, f"{INT8}@1", "--fraction", "1", "--api-url", api.url],
            env={"IMGCLF_ADMIN_PASSWORD": "admin"},
        )
        assert set_by_cli.exit_code == 0, set_by_cli.output
        assert f"shadow {INT8}@1 on 100% of uploads" in set_by_cli.output

        def upload(position: int) -> tuple[int, str]:
            files = {"file": (f"photo{position}.jpg", photos[position], "image/jpeg")}
            response = httpx.post(
                f"{api.url}/model/predict", files=files, headers=headers, timeout=30
            )
            return response.status_code, response.json().get("prediction", response.text)

        with ThreadPoolExecutor(4) as pool:  # a short load run, four callers at a time
            answers = list(pool.map(upload, range(PHOTOS)))
        report: dict = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the comparisons are recorded after the answers
            report = httpx.get(f"{api.url}/models/{LITE0}/shadow", headers=headers).json()
            if report["pairs"] and report["pairs"][0]["comparisons"] == PHOTOS:
                break
            time.sleep(0.2)
        metrics = httpx.get(
            f"{api.url}/metrics", headers={"Authorization": "Bearer test-metrics-token"}
        ).text
        shown = CliRunner().invoke(
            cli,
            ["models", "shadow", LITE0, "--api-url", api.url],
            env={"IMGCLF_ADMIN_PASSWORD": "admin"},
        )
    finally:
        api.stop()

    offline = _offline(fp32_and_int8, photos)
    assert answers == [(200, live[0]) for live, _, _ in offline]
    (pair,) = report["pairs"]
    agreed = sum(live[0] == candidate[0] for live, candidate, _ in offline)
    overlap = sum(len(set(live) & set(candidate)) for live, candidate, _ in offline)
    difference = sum(d for _, _, d in offline) / PHOTOS
    assert (pair["live"], pair["candidate"], pair["comparisons"]) == (
        f"{LITE0}@1",
        f"{INT8}@1",
        PHOTOS,
    )
    assert pair["top1_agreement"]["agreed"] == agreed
    assert pair["top1_agreement"]["share"] == round(agreed / PHOTOS, 4)
    low, high = pair["top1_agreement"]["interval"]
    assert low <= agreed / PHOTOS <= high
    assert pair["top5_overlap"]["mean"] == round(overlap / PHOTOS, 4)
    assert pair["score_difference"]["mean"] == pytest.approx(difference, abs=2e-4)
    for side in ("live_latency_ms", "candidate_latency_ms"):
        low, high = pair[side]["interval"]
        assert 0 < low <= pair[side]["mean"] <= high
    counted = dict(
        re.findall(r'imgclf_shadow_comparisons_total\{.*agreed="(\w+)".*\} (\S+)', metrics)
    )
    assert float(counted.get("true", 0)) == agreed
    assert float(counted.get("false", 0)) == PHOTOS - agreed
    assert shown.exit_code == 0, shown.output
    assert f"{PHOTOS} compared, top-1 agreement {agreed / PHOTOS:.1%}" in shown.output
    print(json.dumps(pair, indent=1))  # the figures, for the record in -s runs
