"""One account cannot take the queue from everyone else: ``imgclf serve`` on a real Redis with
no worker, so that every job waits, and three uploads waiting at most per user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.security.test_model_choice import bearer
from tests.support import ServedApi, dog_upload

PER_USER = 3


@pytest.fixture
def served(redis_url: str, model_dir: Path, tmp_path: Path) -> Iterator[ServedApi]:
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        queue_url=redis_url,
        model_dir=model_dir,
        max_pending=8,
        max_pending_per_user=PER_USER,
        predict_timeout_s=30,
    ) as api:
        yield api


def test_one_users_waiting_jobs_leave_room_for_the_others(served: ServedApi) -> None:
    """Before, 256 async jobs from one account (the whole queue of a model) made every other
    user's upload 503 until they were answered."""
    alice = bearer(served.url, "alice@example.com")
    bob = bearer(served.url, "bob@example.com")
    jobs = f"{served.url}/model/jobs"

    queued = [httpx.post(jobs, files=dog_upload(), headers=alice) for _ in range(PER_USER)]
    # Each route in both spellings: the routes serve /model/jobs/ as /model/jobs, and a check
    # of one spelling let an account queue without end through the other.
    refused = [
        httpx.post(f"{served.url}{path}", files=dog_upload(), headers=alice)
        for path in ("/model/jobs", "/model/jobs/", "/model/predict", "/model/predict/")
    ]
    bobs = httpx.post(jobs, files=dog_upload(), headers=bob)

    assert [answer.status_code for answer in queued] == [202] * PER_USER
    for answer in refused:
        assert answer.status_code == 429
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["detail"] == (
            f"You already have {PER_USER} images waiting for an answer; send more once some "
            "of them are answered."
        )
    assert bobs.status_code == 202
