"""What the real server (``imgclf serve``) lets slip to whoever asks: metrics, internals in
error answers, redirects to the Host a caller names, and other users' uploads via the cache."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imgclf.localservers import free_port
from tests.support import DOG_JPEG, ServedApi

METRICS_TOKEN = "scraper-token-for-the-tests-only"
_emails = itertools.count(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServedApi]:
    """The embedded service with its cache on and a metrics token."""
    root = tmp_path_factory.mktemp("exposure")
    with ServedApi(
        root / "api.log",
        root / "data",
        model_dir=model_dir,
        model_threads=1,
        metrics_token=METRICS_TOKEN,
    ) as api:
        yield api


@pytest.fixture(scope="module")
def without_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedApi, int]]:
    """An API whose Redis is nowhere: nothing listens on its port."""
    root = tmp_path_factory.mktemp("no-redis")
    port = free_port()
    with ServedApi(root / "api.log", root / "data", queue_url=f"redis://127.0.0.1:{port}/0") as api:
        yield api, port


def sign_up(url: str) -> dict[str, str]:
    email = f"exposed{next(_emails)}@example.com"
    account = {"name": "Exposed", "email": email, "password": "correct horse battery"}
    assert httpx.post(f"{url}/user/", json=account).status_code == 201
    login = {"username": email, "password": account["password"]}
    token = httpx.post(f"{url}/login", data=login).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def predict(url: str, headers: dict[str, str]) -> dict[str, object]:
    files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
    answer = httpx.post(f"{url}/model/predict", files=files, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_metrics_only_with_the_token(served: ServedApi) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}):
        refused = httpx.get(f"{served.url}/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.json() == {
            "detail": "Metrics need the bearer token set in IMGCLF_METRICS_TOKEN."
        }
        assert "imgclf_" not in refused.text
    scraped = httpx.get(
        f"{served.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert scraped.status_code == 200
    assert "imgclf_http_requests_total" in scraped.text


def test_without_a_token_metrics_are_off(without_redis: tuple[ServedApi, int]) -> None:
    api, _port = without_redis
    answer = httpx.get(f"{api.url}/metrics")
    assert answer.status_code == 404
    assert "IMGCLF_METRICS_TOKEN" in answer.json()["detail"]


def test_the_other_spelling_of_a_path_is_served_not_redirected(served: ServedApi) -> None:
    for path, status in (("/user", 401), ("/user/me/", 401), ("/health/live/", 200)):
        answer = httpx.get(f"{served.url}{path}", headers={"Host": "evil.example"})
        assert answer.status_code == status, path
        assert "location" not in answer.headers
        assert "evil.example" not in answer.text


def test_cached_says_only_what_this_user_uploaded_before(served: ServedApi) -> None:
    alice, bob = sign_up(served.url), sign_up(served.url)
    assert predict(served.url, alice)["cached"] is False
    assert predict(served.url, bob)["cached"] is False  # Alice's upload is not Bob's business
    assert predict(served.url, bob)["cached"] is True


def test_answers_without_redis_name_no_address_and_no_error_text(
    without_redis: tuple[ServedApi, int],
) -> None:
    api, port = without_redis
    ready = httpx.get(f"{api.url}/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["queue"] == "unavailable"
    admin = {"username": "admin@example.com", "password": "admin"}
    token = httpx.post(f"{api.url}/login", data=admin).json()["access_token"]
    files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
    answers = [ready] + [
        httpx.post(f"{api.url}{path}", files=files, headers={"Authorization": f"Bearer {token}"})
        for path in ("/model/predict", "/model/jobs")
    ]
    for answer in answers[1:]:
        assert answer.status_code == 503
        assert answer.json() == {
            "detail": "The model service is unavailable: the job queue is unreachable."
        }
    for answer in answers:
        assert str(port) not in answer.text
        assert "refused" not in answer.text.lower()
    assert str(port) in api.output()  # the details are in the log, for the operator


def test_a_stored_image_is_kept_by_no_cache(served: ServedApi) -> None:
    """An upload is its owner's: a browser on a shared machine must not keep it after they log
    out (it answered ``private, max-age=3600``; the UI embeds its thumbnails and never needed
    the browser's cache)."""
    headers = sign_up(served.url)
    prediction_id = predict(served.url, headers)["prediction_id"]
    image = httpx.get(f"{served.url}/model/predictions/{prediction_id}/image", headers=headers)
    assert image.status_code == 200
    assert image.headers["cache-control"] == "no-store"
