"""`imgclf worker --processes 2 --metrics-port P`: each worker process exports its own series,
labelled by worker and model, on P and P+1; what they counted adds up to what was asked."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from imgclf.launcher import environment, imgclf_command, wait_until
from imgclf.monitoring import free_ports
from imgclf.serving import create_service_app
from imgclf.settings import Settings
from tests.support import dog_upload, stop_process, wait_for_workers

PREDICTIONS = 12


@pytest.fixture
def two_workers(redis_url: str, model_dir: Path) -> Iterator[list[str]]:
    port = free_ports(2)
    env = environment(
        {"queue_url": redis_url, "model_dir": model_dir, "worker_heartbeat_s": 0.5}, clean=True
    )
    command = [*imgclf_command(), "worker", "--processes", "2", "--metrics-port", str(port)]
    supervisor = subprocess.Popen(command, env=env)
    try:
        wait_for_workers(redis_url, 2)
        urls = [f"http://127.0.0.1:{p}/metrics" for p in (port, port + 1)]
        wait_until(lambda: all(_answers(url) for url in urls), "worker exporters", 60, [])
        yield urls
    finally:
        stop_process(supervisor)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def total(metrics: str, pattern: str) -> float:
    return sum(float(value) for value in re.findall(pattern + r" (\S+)", metrics))


def test_each_worker_exports_what_it_computed(
    two_workers: list[str], redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(queue_url=redis_url, data_dir=tmp_path / "api", cache=False)
    with TestClient(create_service_app(settings)) as client:
        login = client.post("/login", data={"username": "admin@example.com", "password": "admin"})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for _ in range(PREDICTIONS):
            answer = client.post("/model/predict", files=dog_upload(), headers=headers)
            assert answer.status_code == 200

    scrapes = [httpx.get(url, timeout=5).text for url in two_workers]
    ok = r'imgclf_worker_jobs_total\{model="[^"]+",outcome="ok",worker="[^"]+"\}'
    assert sum(total(scrape, ok) for scrape in scrapes) == PREDICTIONS
    for scrape in scrapes:
        assert "process_start_time_seconds" in scrape
        assert "imgclf_dead_letters 0.0" in scrape
        assert 'model="efficientnet-lite0@' in scrape or total(scrape, ok) == 0
    calls = sum(total(s, r"imgclf_worker_batch_size_count\{[^}]*\}") for s in scrapes)
    assert 1 <= calls <= PREDICTIONS
