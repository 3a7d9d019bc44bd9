"""What one user can make the real server (``imgclf serve``) store: a quota per user, uploads
stored once per user, and no megabytes riding behind a tiny picture."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.security.test_exposure import sign_up
from tests.security.test_request_limits import wait_until_live
from tests.support import ServedApi

QUOTA_MB = 1


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServedApi]:
    root = tmp_path_factory.mktemp("storage")
    api = ServedApi(
        root / "api.log",
        root / "data",
        model_dir=model_dir,
        model_threads=1,
        user_storage_quota_mb=QUOTA_MB,
    )
    try:
        wait_until_live(api.url)
        yield api
    finally:
        api.stop()


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
