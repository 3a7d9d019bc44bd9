"""What one user can make the real server (``imgclf serve``) store: a quota per user, uploads
stored once per user, and no megabytes riding behind a tiny picture."""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.security.test_exposure import sign_up
from tests.support import ServedApi

QUOTA_MB = 1
SCRAPER_TOKEN = "storage-scraper-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServedApi]:
    root = tmp_path_factory.mktemp("storage")
    with ServedApi(
        root / "api.log",
        root / "data",
        model_dir=model_dir,
        model_threads=1,
        user_storage_quota_mb=QUOTA_MB,
        metrics_token=SCRAPER_TOKEN,
    ) as api:
        yield api


def quota_refusals(served: ServedApi) -> float:
    """``imgclf_quota_refusals_total{quota="storage"}`` as the server's /metrics has it."""
    scrape = httpx.get(
        f"{served.url}/metrics", headers={"Authorization": f"Bearer {SCRAPER_TOKEN}"}
    ).text
    found = re.search(r'^imgclf_quota_refusals_total\{quota="storage"\} (\S+)$', scrape, re.M)
    return float(found.group(1)) if found else 0.0


def noise_png(seed: int, side: int = 320) -> bytes:
    """A real picture that does not compress: about 300 KB at 320 x 320."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(
    url: str, headers: dict[str, str], data: bytes, path: str = "/model/predict"
) -> httpx.Response:
    files = {"file": ("picture.png", data, "image/png")}
    return httpx.post(f"{url}{path}", files=files, headers=headers, timeout=30)


def stored(served: ServedApi, data: bytes) -> bool:
    """Whether the upload is in the server's upload folder."""
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    return (served.data_dir / "uploads" / f"{digest}.png").exists()


def test_megabytes_behind_a_tiny_picture_are_not_stored(served: ServedApi) -> None:
    alice = sign_up(served.url)
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tiny, format="PNG")
    data = tiny.getvalue() + b"\0" * (19 * 2**20)
    answer = upload(served.url, alice, data)
    assert answer.status_code == 200
    assert not stored(served, data)
    assert stored(served, tiny.getvalue())  # the picture alone, a few dozen bytes


def test_each_user_stores_at_most_the_quota_and_a_repeat_costs_nothing(served: ServedApi) -> None:
    alice, bob = sign_up(served.url), sign_up(served.url)
    refusals_before = quota_refusals(served)
    pictures = [noise_png(seed) for seed in range(5)]
    assert sum(len(p) for p in pictures[:3]) <= QUOTA_MB * 2**20 < sum(len(p) for p in pictures[:4])

    assert [upload(served.url, alice, p).status_code for p in pictures[:3]] == [200, 200, 200]
    refused = upload(served.url, alice, pictures[3])
    assert refused.status_code == 507
    detail = refused.json()["detail"]
    assert detail.startswith("Your storage quota is full: your images take 0.9 MB of 1 MB")
    assert detail.endswith("Images you have uploaded before can still be classified.")
    assert not stored(served, pictures[3])

    again = upload(served.url, alice, pictures[0])  # stored for her already: free
    assert again.status_code == 200
    queued = upload(served.url, alice, pictures[4], path="/model/jobs")
    assert (queued.status_code, queued.json()["detail"][:27]) == (
        507,
        "Your storage quota is full:",
    )
    assert not stored(served, pictures[4])

    # Bob has a quota of his own, and pays for his copy of a picture Alice stored too.
    assert upload(served.url, bob, pictures[3]).status_code == 200
    assert upload(served.url, bob, pictures[0]).status_code == 200
    history = httpx.get(f"{served.url}/model/predictions", headers=alice).json()
    assert len(history) == 4  # the refused uploads were not recorded
    # Counted apart from the service's own failures, which page whoever runs it.
    assert quota_refusals(served) - refusals_before == 2


def test_jobs_queued_together_past_the_quota_fail_with_its_reason(served: ServedApi) -> None:
    """Six jobs queued at once, three of which fit: those that pass the early check but do not
    fit when they are recorded read "failed" with the quota's message, not "done" with nothing
    recorded. (On a busy machine some are answered and recorded before the others arrive, and
    those are refused at the door instead.)"""
    dave = sign_up(served.url)
    pictures = [noise_png(300 + seed) for seed in range(6)]
    with ThreadPoolExecutor(len(pictures)) as pool:
        queued = list(pool.map(lambda p: upload(served.url, dave, p, "/model/jobs"), pictures))
    at_the_door = [answer for answer in queued if answer.status_code == 507]
    ids = [answer.json()["job_id"] for answer in queued if answer.status_code == 202]
    assert len(at_the_door) + len(ids) == len(pictures)

    def settled() -> tuple[list[dict[str, object]], list[object]]:
        """The jobs and the history, once each job is recorded or has failed (the recorder's
        verdict follows the worker's answer by a moment, longer on a busy machine)."""
        deadline = time.monotonic() + 60
        while True:
            jobs = [httpx.get(f"{served.url}/model/jobs/{i}", headers=dave).json() for i in ids]
            history = httpx.get(f"{served.url}/model/predictions", headers=dave).json()
            failed = sum(job["status"] == "failed" for job in jobs)
            # Read one after the other: a job read pending may be recorded before the history
            # is read, so both must agree.
            pending = any(job["status"] == "pending" for job in jobs)
            if (not pending and len(history) + failed == len(ids)) or time.monotonic() > deadline:
                return jobs, history
            time.sleep(0.2)

    jobs, history = settled()

    done = [job for job in jobs if job["status"] == "done"]
    failed = [job for job in jobs if job["status"] == "failed"]
    assert len(done) == len(history) == 3  # every "done" is recorded
    assert len(failed) + len(at_the_door) == 3
    reasons = [str(job["error"]) for job in failed] + [a.json()["detail"] for a in at_the_door]
    assert all(reason.startswith("Your storage quota is full") for reason in reasons)


def test_deleting_an_account_removes_the_images_no_one_else_recorded(served: ServedApi) -> None:
    """Before, they stayed on disk for good: a deletion and a new sign-up gave a fresh quota
    beside them, again and again."""
    erin, frank = sign_up(served.url), sign_up(served.url)
    pictures = [noise_png(400 + seed) for seed in range(3)]
    assert [upload(served.url, erin, p).status_code for p in pictures] == [200] * 3
    shared = upload(served.url, frank, pictures[0])
    assert shared.status_code == 200

    me = httpx.get(f"{served.url}/user/me", headers=erin).json()
    assert httpx.delete(f"{served.url}/user/{me['id']}", headers=erin).status_code == 204

    assert [stored(served, p) for p in pictures] == [True, False, False]
    image = httpx.get(
        f"{served.url}/model/predictions/{shared.json()['prediction_id']}/image", headers=frank
    )
    assert (image.status_code, image.content) == (200, pictures[0])


def test_a_deleted_accounts_token_stores_nothing(served: ServedApi) -> None:
    """Its token stays valid until it expires, but the account is gone: no file is written
    (before: each upload was stored, then refused 401, past any quota)."""
    carol = sign_up(served.url)
    me = httpx.get(f"{served.url}/user/me", headers=carol).json()
    assert httpx.delete(f"{served.url}/user/{me['id']}", headers=carol).status_code == 204
    pictures = [noise_png(200 + seed) for seed in range(5)]  # 1.5 MB, past the 1 MB quota

    statuses = [upload(served.url, carol, picture).status_code for picture in pictures]

    assert statuses == [401] * 5
    assert not any(stored(served, picture) for picture in pictures)


def test_two_processes_cannot_both_spend_the_last_of_a_quota(
    tmp_path: Path, model_dir: Path, database_url: str
) -> None:
    """Twelve pictures, three of which fit, sent at once to two API processes on one database:
    each process checks the quota and charges it in one transaction, so three are stored.
    (tests/api/test_recorder.py forces the two processes' checks to meet; here they meet as
    real uploads happen to.)"""
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        model_dir=model_dir,
        model_threads=1,
        web_concurrency=2,
        database_url=database_url,
        user_storage_quota_mb=QUOTA_MB,
    ) as api:
        alice = sign_up(api.url)
        pictures = [noise_png(100 + seed) for seed in range(12)]
        assert sum(sorted(map(len, pictures))[:4]) > QUOTA_MB * 2**20  # no four fit
        with ThreadPoolExecutor(len(pictures)) as pool:
            answers = list(pool.map(lambda p: upload(api.url, alice, p), pictures))
        statuses = [answer.status_code for answer in answers]
        assert sorted(set(statuses)) == [200, 507], statuses
        accepted = [p for p, status in zip(pictures, statuses, strict=True) if status == 200]
        assert len(accepted) == 3
        assert sum(stored(api, p) for p in pictures) == 3

        refused = upload(api.url, alice, noise_png(999))
        used_mb = sum(map(len, accepted)) / 2**20
        expected = f"Your storage quota is full: your images take {used_mb:.1f} MB of"
        assert refused.json()["detail"].startswith(expected)


def test_a_stored_upload_that_no_longer_matches_its_name_is_written_again(
    served: ServedApi,
) -> None:
    """The upload's name is its MD5: a file there with other bytes is either damaged (written
    again here) or another picture forged to share the digest (refused: tests/api/
    test_recorder.py), never taken for this one."""
    erin = sign_up(served.url)
    picture = noise_png(900, side=64)
    assert upload(served.url, erin, picture).status_code == 200
    digest = hashlib.md5(picture, usedforsecurity=False).hexdigest()
    path = served.data_dir / "uploads" / f"{digest}.png"
    path.write_bytes(picture[: len(picture) // 2])  # cut short, as a failing disk might

    assert upload(served.url, erin, picture).status_code == 200
    assert path.read_bytes() == picture
