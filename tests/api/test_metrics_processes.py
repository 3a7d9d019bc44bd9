"""/metrics under `imgclf serve --workers 4`: whichever process a scrape reaches, it answers for
all four, so counters add up instead of jumping between the processes' own counts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from imgclf.launcher import wait_until
from tests.support import ServedApi, dog_upload, start_worker, stop_process, wait_for_workers

TOKEN = "a-metrics-token-for-the-test"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}
PREDICTIONS = 100


@pytest.fixture
def four_processes(redis_url: str, model_dir: Path, tmp_path: Path) -> Iterator[ServedApi]:
    worker = start_worker(redis_url, model_dir)
    try:
        with ServedApi(
            tmp_path / "api.log",
            tmp_path / "data",
            queue_url=redis_url,
            web_concurrency=4,
            metrics_token=TOKEN,
            login_max_failures_per_address=1000,
        ) as served:
            wait_for_workers(redis_url, 1)
            wait_until(lambda: ready(served.url), "four API processes", 90, [served.child])
            yield served
    finally:
        stop_process(worker)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def predictions_counted(metrics: str) -> float:
    counted = re.findall(
        r'imgclf_http_requests_total\{method="POST",route="/model/predict",status="200"\} (\S+)',
        metrics,
    )
    return sum(float(value) for value in counted)


def test_a_hundred_predictions_show_as_a_hundred_in_any_scrape(four_processes: ServedApi) -> None:
    url = four_processes.url
    login = httpx.post(
        f"{url}/login", data={"username": "admin@example.com", "password": "admin"}, timeout=30
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    def predict(_: int) -> int:
        # A connection each, so uvicorn's processes share the requests between them.
        with httpx.Client(timeout=60) as client:
            answer = client.post(f"{url}/model/predict", files=dog_upload(), headers=headers)
            return answer.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(predict, range(PREDICTIONS)))
    assert statuses == [200] * PREDICTIONS

    for _ in range(8):
        with httpx.Client(timeout=10) as client:  # a new connection: maybe another process
            scrape = client.get(f"{url}/metrics", headers=SCRAPER)
        assert scrape.status_code == 200
        assert predictions_counted(scrape.text) == PREDICTIONS
        assert re.search(r"imgclf_batch_size_count \S+", scrape.text)
    assert "imgclf_workers 1.0" in scrape.text
