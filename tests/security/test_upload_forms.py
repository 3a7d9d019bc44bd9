"""Upload forms built to cost the server, against the real server (``imgclf serve``).

The upload routes read their multipart form themselves (``imgclf.api.predictions.form``). Read
whole and parsed in one call, a signed-up user's 20 MB form of a boundary repeated (or of
padding after one) held the event loop for 5-8 s, the health probe with it; and a client that
left mid-upload was a 500 with two tracebacks. Each attack is bounded and aimed at 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from imgclf.api.predictions.form import MAX_PART_HEADER_BYTES, MAX_PARTS
from tests.security.raw_http import (
    probe_while,
    read_answer,
    status_and_detail,
    stream_body,
    trickle_body,
)
from tests.support import DOG_JPEG, ServedApi, signed_up

BOUNDARY = b"a"
FILE_PART = b'--a\r\nContent-Disposition: form-data; name="file"; filename="x.jpeg"\r\n\r\n'
CLOSE = b"\r\n--a--\r\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServedApi]:
    root = tmp_path_factory.mktemp("upload-forms")
    with ServedApi(root / "api.log", root / "data", model_dir=model_dir, model_threads=1) as api:
        yield api


@pytest.fixture(scope="module")
def token(served: ServedApi) -> str:
    return signed_up(served.url, "mallory")


def upload_head(token: str, length: int) -> bytes:
    return (
        "POST /model/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY.decode()}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def attack(served: ServedApi, token: str, body: bytes) -> tuple[int, str, int]:
    """Send ``body`` as an upload while probing the server; (status, detail, bytes sent)."""
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(stream_body, served.port, upload_head(token, len(body)), body)
        probes = probe_while(served.url, sending)
        answer, sent = sending.result()
    assert all(status == 200 for status, _ in probes), probes
    status, detail = status_and_detail(answer)
    return status, detail, sent


def test_a_boundary_repeated_a_million_times_is_refused_before_the_body_ends(
    served: ServedApi, token: str
) -> None:
    body = FILE_PART + b"\r\n--a-X" * 2_900_000 + CLOSE  # 20 MB, under the upload cap
    status, detail, sent = attack(served, token, body)
    assert (status, f"more than {MAX_PARTS} parts" in detail) == (400, True), detail
    assert sent < len(body) // 2  # refused at its first pieces, not parsed whole


def test_padding_after_a_boundary_is_refused_as_it_arrives(served: ServedApi, token: str) -> None:
    """The parser reads a part's padding byte by byte: 20 MB of spaces took it 7 s, and the
    upload around it was then classified; a budget per form still let one user keep the
    event loop busy with one such form after another."""
    body = (
        FILE_PART
        + DOG_JPEG.read_bytes()
        + b"\r\n--a"
        + b" " * 20_000_000
        + b'\r\nContent-Disposition: form-data; name="x"\r\n\r\nv'
        + CLOSE
    )
    status, detail, sent = attack(served, token, body)
    assert (status, "followed by padding" in detail) == (400, True), detail
    assert sent < len(body) // 2


def test_a_part_header_padded_past_its_limit_is_refused(served: ServedApi, token: str) -> None:
    padded = FILE_PART.replace(b"form-data;", b"form-data;" + b" " * MAX_PART_HEADER_BYTES)
    status, detail, _sent = attack(served, token, padded + DOG_JPEG.read_bytes() + CLOSE)
    assert (status, f"over {MAX_PART_HEADER_BYTES} bytes" in detail) == (400, True), detail


def test_a_client_leaving_mid_upload_is_no_server_error(served: ServedApi, token: str) -> None:
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(upload_head(token, 100_000) + FILE_PART + b"\xff\xd8" * 500)
    files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
    headers = {"Authorization": f"Bearer {token}"}
    after = httpx.post(f"{served.url}/model/predict", files=files, headers=headers, timeout=30)
    assert after.json()["prediction"] == "Eskimo_dog"
    log = served.output()
    assert "Traceback" not in log, log[-3000:]
    assert "Unhandled error" not in log


def test_a_form_without_its_end_is_refused_saying_so(served: ServedApi, token: str) -> None:
    body = FILE_PART + DOG_JPEG.read_bytes()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(upload_head(token, len(body)) + body)
        status, detail = status_and_detail(read_answer(sock, timeout_s=5))
    assert (status, detail) == (400, "The multipart form ends before its closing boundary.")


def test_an_upload_that_stalls_or_trickles_gives_its_place_back(
    model_dir: Path, tmp_path: Path
) -> None:
    """An upload's place among its sender's, and its bytes in the process's budget, are held
    until it is answered: a body that stopped arriving held them as long as its connection
    stayed open, and a few accounts could take the whole budget from everyone. A body sent a
    few bytes at a time, never pausing long, did the same once pauses were timed."""
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        model_dir=model_dir,
        model_threads=1,
        max_pending_per_user=1,
        body_pause_s=1,
        body_min_rate_kib_s=1,
    ) as api:
        bearer = signed_up(api.url, "slow")
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as stalled:
            stalled.sendall(upload_head(bearer, 1_000_000) + FILE_PART + b"\xff\xd8" * 500)
            status, detail = status_and_detail(read_answer(stalled, timeout_s=10))
        assert (status, detail) == (408, "The request's body stopped arriving for 1 s.")
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as trickling:
            trickling.sendall(upload_head(bearer, 1_000_000) + FILE_PART)
            # 100 bytes every 0.2 s: never a pause of 1 s, half the rate of 1 KiB/s
            status, detail = status_and_detail(trickle_body(trickling, b"\xff" * 100, 0.2, 20))
        assert status == 408
        assert detail.startswith("The request's body arrived too slowly: ")
        assert detail.endswith(" where 1 s and a second more for each 1 KiB are allowed.")
        files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
        headers = {"Authorization": f"Bearer {bearer}"}
        after = httpx.post(f"{api.url}/model/predict", files=files, headers=headers, timeout=30)
        assert after.json()["prediction"] == "Eskimo_dog"


def test_one_account_cannot_hold_the_whole_upload_budget(model_dir: Path, tmp_path: Path) -> None:
    """Uploads announced large and sent slowly are charged as announced: one account's took
    every other user's uploads to 503 (13 of 20 MB held the 256 MB budget)."""
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        model_dir=model_dir,
        model_threads=1,
        max_pending_bytes=12 * 2**20,
        max_pending_bytes_per_user=4 * 2**20,
    ) as api:
        hog, other = signed_up(api.url, "hog"), signed_up(api.url, "other")
        with (
            socket.create_connection(("127.0.0.1", api.port), timeout=10) as first,
            socket.create_connection(("127.0.0.1", api.port), timeout=10) as second,
        ):
            first.sendall(upload_head(hog, 3 * 2**20) + FILE_PART)
            second.sendall(upload_head(hog, 3 * 2**20) + FILE_PART)
            status, detail = status_and_detail(read_answer(second, timeout_s=10))
            assert status == 429
            assert detail.startswith("You already have 3.0 MB of images in flight here")
            files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
            headers = {"Authorization": f"Bearer {other}"}
            answer = httpx.post(f"{api.url}/model/predict", files=files, headers=headers)
            assert answer.json()["prediction"] == "Eskimo_dog"
