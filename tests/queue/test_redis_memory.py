"""A Redis at its memory cap, as compose runs it (``maxmemory`` with ``volatile-lru``), filled
with images by one user through the real server (``imgclf serve``) while no worker runs.

Under that policy Redis evicts keys with a TTL: the login throttle's counts and the owners of
async jobs among them. Images must therefore never be what fills it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from imgclf.localservers import RedisServer, ServerUnavailable
from tests.conftest import unavailable
from tests.security.test_exposure import sign_up
from tests.support import DOG_JPEG, ServedApi

MAXMEMORY = 40 * 2**20
FLOOD = 25  # pictures of about 2.5 MB each: half again more than the whole of Redis


@pytest.fixture
def capped_redis() -> Iterator[RedisServer]:
    server = RedisServer(
        options=["--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "volatile-lru"]
    )
    try:
        server.start()
    except ServerUnavailable as error:
        unavailable(f"Redis: {error}")
    yield server
    server.stop()


def noise_png(seed: int, side: int = 900) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def queue_job(url: str, headers: dict[str, str], data: bytes, name: str) -> httpx.Response:
    files = {"file": (name, data, "image/png" if name.endswith(".png") else "image/jpeg")}
    return httpx.post(f"{url}/model/jobs", files=files, headers=headers, timeout=30)


def fail_login(url: str, email: str) -> int:
    wrong = {"username": email, "password": "not the password"}
    return httpx.post(f"{url}/login", data=wrong).status_code


def test_images_never_evict_the_login_throttle_or_job_owners(
    capped_redis: RedisServer, model_dir: Path, tmp_path: Path
) -> None:
    # No worker: the jobs wait. The API's own model folder names the version to admit them for.
    with (
        ServedApi(
            tmp_path / "api.log",
            tmp_path / "data",
            queue_url=capped_redis.url,
            model_dir=model_dir,
            predict_timeout_s=60,
        ) as api,
        redis.Redis.from_url(capped_redis.url) as client,
    ):
        victim = sign_up(api.url)
        victim_email = httpx.get(f"{api.url}/user/me", headers=victim).json()["email"]
        assert [fail_login(api.url, victim_email) for _ in range(3)] == [401] * 3
        job = queue_job(api.url, victim, DOG_JPEG.read_bytes(), "dog.jpeg")
        assert job.status_code == 202
        job_id = job.json()["job_id"]
        throttle_keys = set(client.keys("imgclf:attempts:*"))
        assert throttle_keys

        attacker = sign_up(api.url)
        accepted = [
            queue_job(api.url, attacker, noise_png(seed), f"{seed}.png").json()["job_id"]
            for seed in range(FLOOD)
        ]
        statuses = [
            httpx.get(f"{api.url}/model/jobs/{job}", headers=attacker).json() for job in accepted
        ]
        refused = [status for status in statuses if status["status"] == "failed"]
        memory = client.info("memory")
        stats = client.info("stats")

        assert stats["evicted_keys"] == 0
        assert memory["used_memory"] < MAXMEMORY
        assert client.memory_usage("imgclf:jobs:efficientnet-lite0", samples=0) <= MAXMEMORY // 2
        assert refused, "the flood was never refused"
        assert {status["error"] for status in refused} == {
            "The service is busy: the queued images fill their memory; retry shortly."
        }
        assert set(client.keys("imgclf:attempts:*")) >= throttle_keys
        mine = httpx.get(f"{api.url}/model/jobs/{job_id}", headers=victim)
        assert (mine.status_code, mine.json()["status"]) == (200, "pending")
        # The throttle kept counting: two more failures make five, and the email is locked.
        assert [fail_login(api.url, victim_email) for _ in range(2)] == [401, 401]
        assert fail_login(api.url, victim_email) == 429


def test_each_api_process_holds_at_most_its_bytes_of_uploads(
    redis_url: str, model_dir: Path, tmp_path: Path
) -> None:
    """Async jobs keep their image in the API process until answered (here: until their
    deadline, no worker runs); past IMGCLF_MAX_PENDING_BYTES new uploads get 503 at the door."""
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        queue_url=redis_url,
        model_dir=model_dir,
        predict_timeout_s=3,
        max_pending_bytes=2 * 2**20,
    ) as api:
        alice = sign_up(api.url)
        pictures = [noise_png(seed, side=450) for seed in range(5)]  # about 600 KB each
        jobs = [queue_job(api.url, alice, pictures[seed], f"{seed}.png") for seed in range(3)]
        assert [job.status_code for job in jobs] == [202] * 3
        refused = queue_job(api.url, alice, pictures[3], "3.png")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["detail"] == (
            "The service is busy: 1.7 MB of images are already in flight here "
            "(the limit is 2 MB); retry shortly."
        )
        # Once those jobs have ended (past their deadline), their bytes are free again.
        first = f"{api.url}/model/jobs/{jobs[0].json()['job_id']}"
        deadline = time.monotonic() + 30
        while httpx.get(first, headers=alice).json()["status"] == "pending":
            assert time.monotonic() < deadline, "the job never ended"
            time.sleep(0.2)
        assert queue_job(api.url, alice, pictures[4], "4.png").status_code == 202


def test_a_flood_spread_over_models_shares_one_byte_budget(
    capped_redis: RedisServer, model_repository: Path, tmp_path: Path
) -> None:
    """Each model has its own job stream; the images of all of them together stay within the
    budget (half of maxmemory), so sending to several models cannot fill Redis either."""
    models = ["efficientnet-lite0", "second-model"]
    with (
        ServedApi(
            tmp_path / "api.log",
            tmp_path / "data",
            queue_url=capped_redis.url,
            model_repository=model_repository,
            predict_timeout_s=60,
        ) as api,
        redis.Redis.from_url(capped_redis.url) as client,
    ):
        attacker = sign_up(api.url)
        files = [(f"{seed}.png", noise_png(seed)) for seed in range(FLOOD)]
        answers = [
            httpx.post(
                f"{api.url}/model/jobs",
                params={"model": models[seed % 2]},
                files={"file": (name, data, "image/png")},
                headers=attacker,
                timeout=30,
            )
            for seed, (name, data) in enumerate(files)
        ]
        assert {answer.status_code for answer in answers} == {202}
        jobs = [answer.json()["job_id"] for answer in answers]
        statuses = [
            httpx.get(f"{api.url}/model/jobs/{job}", headers=attacker).json() for job in jobs
        ]
        held = [client.memory_usage(f"imgclf:jobs:{model}", samples=0) or 0 for model in models]
        assert all(held), held  # both streams took images
        assert sum(held) <= MAXMEMORY // 2
        assert client.info("stats")["evicted_keys"] == 0
        refused = [status for status in statuses if status["status"] == "failed"]
        assert refused, "the flood was never refused"
