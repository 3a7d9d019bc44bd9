"""Attacks through the model a request names: ``?model=`` on the upload routes, against
``imgclf serve`` with a real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from imgclf.queue.keys import RedisKeys
from tests.support import ServedApi, dog_upload

KEYS = RedisKeys()
PASSWORD = "correct horse battery"
METRICS_TOKEN = "metrics-token-for-the-model-choice-tests"
ODD_NAMES = [
    "*",
    "imgclf:*",
    "a:b",
    "../efficientnet-lite0",
    "efficientnet-lite0@1",
    "%00",
    "x" * 100,
]
NOT_AN_IMAGE = {"file": ("big.jpg", b"\0" * 4 * 2**20, "image/jpeg")}


@pytest.fixture
def served(redis_url: str, model_dir: Path, tmp_path: Path) -> Iterator[ServedApi]:
    """One job awaited per model at most, and no worker: a job waits for its deadline."""
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        queue_url=redis_url,
        model_dir=model_dir,
        max_pending=1,
        predict_timeout_s=8,
        metrics_token=METRICS_TOKEN,
    ) as api:
        yield api


def bearer(url: str, email: str = "mallory@example.com") -> dict[str, str]:
    account = {"name": "Mallory", "email": email, "password": PASSWORD}
    signed = httpx.post(f"{url}/user/", json=account)
    assert signed.status_code == 201, signed.text
    token = httpx.post(f"{url}/login", data={"username": email, "password": PASSWORD})
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def test_a_repeated_model_parameter_does_not_slip_past_the_door(
    served: ServedApi, redis_url: str
) -> None:
    """The door counts the jobs awaited for the model a request names, before reading its
    body. It must read the name the route will use: with ``?model=`` given twice it read the
    first and the route the last, so a full model's uploads were read and checked anyway."""
    headers = bearer(served.url)
    predict = f"{served.url}/model/predict"
    jobs = redis.Redis.from_url(redis_url)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(httpx.post, predict, files=dog_upload(), headers=headers, timeout=30)
        deadline = time.monotonic() + 10
        while not jobs.xlen(KEYS.jobs("efficientnet-lite0")) and time.monotonic() < deadline:
            time.sleep(0.05)
        answers = {
            query: httpx.post(predict + query, files=NOT_AN_IMAGE, headers=headers, timeout=30)
            for query in (
                "",
                "?model=efficientnet-lite0",
                "?model=elsewhere&model=efficientnet-lite0",
                "?model=&model=efficientnet-lite0",
            )
        }
        assert waiting.result().status_code == 504
    for query, answer in answers.items():
        assert (query, answer.status_code) == (query, 503)
        assert "already waiting for efficientnet-lite0" in answer.json()["detail"]


def test_odd_model_names_leave_no_key_and_no_series(served: ServedApi, redis_url: str) -> None:
    """Names like Redis patterns, paths, versions and 100 characters, each from a new name:
    refused with the names there are, and nothing is kept per name (a Redis key or a
    Prometheus series per name would grow with every name a client makes up)."""
    headers = bearer(served.url)
    store = redis.Redis.from_url(redis_url)
    keys_before = set(store.keys("*"))
    names = [f"{name}{n}" for n in range(20) for name in ODD_NAMES[:-1]] + ODD_NAMES
    for name in names:
        answer = httpx.post(
            f"{served.url}/model/predict",
            params={"model": name},
            files=dog_upload(),
            headers=headers,
            timeout=30,
        )
        assert answer.status_code == 404, answer.text
        assert answer.json()["detail"].endswith("available: efficientnet-lite0")
    for length, status in ((5_000, 422), (10_000, 414)):  # 414: over the URL limit
        long = httpx.post(
            f"{served.url}/model/predict", params={"model": "x" * length}, headers=headers
        )
        assert long.status_code == status
    assert set(store.keys("*")) - keys_before <= {KEYS.jobs("efficientnet-lite0").encode()}
    metrics = httpx.get(
        f"{served.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    labelled = {
        line.split('model="')[1].split('"')[0] for line in metrics.splitlines() if 'model="' in line
    }
    assert labelled <= {"efficientnet-lite0", "efficientnet-lite0@1"}
