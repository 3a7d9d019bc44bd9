"""A load run through ``imgclf serve`` (its own process, the real FP32 and INT8 models) with a
shadow set on every upload: the figures the API answers are those of a direct offline
comparison of the same photos with the project's Classifier."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from typer.testing import CliRunner

from imgclf.cli import app as cli
from imgclf.model.bundle import load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.images import ImageLimits
from tests.api.test_shadow import LITE0, _link_bundle
from tests.conftest import Int8Build
from tests.support import ServedApi, sample_photos, stop_process, wait_for_workers
from tests.test_model_swap import start_worker

INT8 = "efficientnet-lite0-int8"
PHOTOS = 40
ADMIN = {"username": "admin@example.com", "password": "admin"}


@pytest.fixture(scope="module")
def fp32_and_int8(
    model_dir: Path, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A repository with efficientnet-lite0@1 and efficientnet-lite0-int8@1: the one `make
    models` built beside the FP32 bundle when there is one, else the run's INT8 build (the
    comparison needs a real INT8 model, not its best one)."""
    root = tmp_path_factory.mktemp("fp32-int8")
    _link_bundle(model_dir, root / LITE0 / "1", name=LITE0, version=1)
    built = model_dir.parents[1] / INT8 / "1"
    if not (built / "bundle.json").exists():
        build: Int8Build = request.getfixturevalue("int8_build")
        assert build.returncode == 0, build.stdout + build.stderr
        built = build.folder
    _link_bundle(built, root / INT8 / "1", version=1)
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


def _assert_figures_match(
    report: dict[str, Any],
    answers: list[tuple[int, str]],
    offline: list[tuple[list[str], list[str], float]],
) -> int:
    """The API's figures are the offline comparison's; returns the uploads that agreed."""
    count = len(offline)
    assert answers == [(200, live[0]) for live, _, _ in offline]
    (pair,) = report["pairs"]
    agreed = sum(live[0] == candidate[0] for live, candidate, _ in offline)
    overlap = sum(len(set(live) & set(candidate)) for live, candidate, _ in offline)
    difference = sum(d for _, _, d in offline) / count
    assert (pair["live"], pair["candidate"], pair["comparisons"]) == (
        f"{LITE0}@1",
        f"{INT8}@1",
        count,
    )
    assert pair["top1_agreement"]["agreed"] == agreed
    assert pair["top1_agreement"]["share"] == round(agreed / count, 4)
    low, high = pair["top1_agreement"]["interval"]
    assert low <= agreed / count <= high
    assert pair["top5_overlap"]["mean"] == round(overlap / count, 4)
    assert pair["score_difference"]["mean"] == pytest.approx(difference, abs=2e-4)
    for side in ("live_latency_ms", "candidate_latency_ms"):
        low, high = pair[side]["interval"]
        assert 0 < low <= pair[side]["mean"] <= high
    return agreed


def _upload_all(url: str, headers: dict[str, str], photos: list[bytes]) -> list[tuple[int, str]]:
    """A short load run: every photo once, four callers at a time; (status, top-1) each."""

    def upload(position: int) -> tuple[int, str]:
        files = {"file": (f"photo{position}.jpg", photos[position], "image/jpeg")}
        response = httpx.post(f"{url}/model/predict", files=files, headers=headers, timeout=30)
        return response.status_code, response.json().get("prediction", response.text)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(upload, range(len(photos))))


def _report_once_recorded(url: str, headers: dict[str, str], count: int) -> dict[str, Any]:
    """The shadow figures once ``count`` comparisons are in (they are recorded after the
    answers), or as they are after 30 s."""
    report: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        report = httpx.get(f"{url}/models/{LITE0}/shadow", headers=headers).json()
        if report["pairs"] and report["pairs"][0]["comparisons"] >= count:
            break
        time.sleep(0.2)
    return report


@pytest.mark.slow
def test_shadow_figures_match_an_offline_comparison(tmp_path: Path, fp32_and_int8: Path) -> None:
    photos = sample_photos(PHOTOS)
    with ServedApi(
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
        shadow_max_busy=1.0,
        metrics_token="test-metrics-token",
    ) as api:
        token = httpx.post(f"{api.url}/login", data=ADMIN).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        set_by_cli = CliRunner().invoke(
            cli,
            ["models", "shadow", LITE0, f"{INT8}@1", "--fraction", "1", "--api-url", api.url],
            env={"IMGCLF_ADMIN_PASSWORD": "admin"},
        )
        assert set_by_cli.exit_code == 0, set_by_cli.output
        assert f"shadow {INT8}@1 on 100% of uploads" in set_by_cli.output

        answers = _upload_all(api.url, headers, photos)
        report = _report_once_recorded(api.url, headers, PHOTOS)
        metrics = httpx.get(
            f"{api.url}/metrics", headers={"Authorization": "Bearer test-metrics-token"}
        ).text
        shown = CliRunner().invoke(
            cli,
            ["models", "shadow", LITE0, "--api-url", api.url],
            env={"IMGCLF_ADMIN_PASSWORD": "admin"},
        )

    agreed = _assert_figures_match(report, answers, _offline(fp32_and_int8, photos))
    counted = dict(
        re.findall(r'imgclf_shadow_comparisons_total\{.*agreed="(\w+)".*\} (\S+)', metrics)
    )
    assert float(counted.get("true", 0)) == agreed
    assert float(counted.get("false", 0)) == PHOTOS - agreed
    assert shown.exit_code == 0, shown.output
    assert f"{PHOTOS} compared, top-1 agreement {agreed / PHOTOS:.1%}" in shown.output


@pytest.mark.slow
def test_in_redis_mode_every_api_process_shadows_alike(
    tmp_path: Path, fp32_and_int8: Path, redis_url: str
) -> None:
    """One worker serving both models; the shadow set through one API process is followed by
    another (the Redis hash), whose uploads are compared the same way."""
    photos = sample_photos(PHOTOS // 2)
    worker = start_worker(redis_url, fp32_and_int8, tmp_path / "worker.log")
    shared = {
        "queue_url": redis_url,
        "database_url": f"sqlite:///{tmp_path / 'shared.db'}",
        "default_model": LITE0,
        "cache": False,
        "shadow_max_waiting": 1000,
        "shadow_max_in_flight": 1000,
        "shadow_max_busy": 1.0,
    }
    try:
        wait_for_workers(redis_url, 1)
        with (
            ServedApi(tmp_path / "first.log", tmp_path / "first", **shared) as first,
            ServedApi(tmp_path / "second.log", tmp_path / "second", **shared) as second,
        ):
            token = httpx.post(f"{first.url}/login", data=ADMIN).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            body = {"candidate": f"{INT8}@1", "fraction": 1.0}
            set_ = httpx.put(f"{first.url}/models/{LITE0}/shadow", json=body, headers=headers)
            assert set_.status_code == 200, set_.text
            time.sleep(1.5)  # each process reads the setting again within a second
            seen = httpx.get(f"{second.url}/models/{LITE0}/shadow", headers=headers).json()
            answers = _upload_all(second.url, headers, photos)
            report = _report_once_recorded(first.url, headers, len(photos))
            client = redis.Redis.from_url(redis_url)
            stored = client.hgetall("imgclf:shadow")
            (worker_name,) = client.smembers("imgclf:workers")
            heartbeat = json.loads(client.get(f"imgclf:worker:{worker_name.decode()}") or b"{}")
    finally:
        stop_process(worker)

    assert (seen["candidate"], seen["fraction"]) == (f"{INT8}@1", 1.0)
    assert json.loads(stored[LITE0.encode()]) == body
    assert 0 <= heartbeat["busy"] <= 1  # how busy the worker was: the copies' gate
    _assert_figures_match(report, answers, _offline(fp32_and_int8, photos))
