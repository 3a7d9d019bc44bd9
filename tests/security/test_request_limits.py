"""Request heads and bodies against the real server (``imgclf serve``): caps and a timeout.

A request head (request line and headers) is read and joined on the event loop before any
route runs, so a huge or endless one used to stall every other request of the process; a
body that claimed to be multipart was buffered up to the upload limit on any route. Each
attack here is bounded (a few MB, a few seconds) and aimed at 127.0.0.1 only.
"""

from __future__ import annotations

import io
import re
import select
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.security.raw_http import (
    CHUNK,
    probe_while,
    read_answer,
    status_and_detail,
    stream_head,
    trickle_after_answer,
)
from tests.support import DOG_JPEG, PeakMemory, ServedApi, signed_up

HEADER_LIMIT = 16 * 1024
URL_LIMIT = 8 * 1024
HEAD_TIMEOUT_S = 2
ATTACK_BYTES = 24 * 2**20


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServedApi]:
    root = tmp_path_factory.mktemp("http-limits")
    with ServedApi(
        root / "api.log",
        root / "data",
        model_dir=model_dir,
        model_threads=1,
        header_timeout_s=HEAD_TIMEOUT_S,
    ) as api:
        yield api


def test_a_huge_header_is_refused_with_431_while_probes_keep_answering(served: ServedApi) -> None:
    start = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: "
    with ThreadPoolExecutor(1) as pool:
        attack = pool.submit(stream_head, served.port, start, ATTACK_BYTES)
        probes = probe_while(served.url, attack)
        answer, sent = attack.result()

    status, detail = status_and_detail(answer)
    assert status == 431
    assert detail == "The request's headers are larger than the 16 KB limit."
    assert b"connection: close" in answer.lower()
    assert sent < ATTACK_BYTES  # the server stopped reading long before the end
    assert all(status == 200 for status, _ in probes), probes


def test_a_long_url_is_refused_with_414(served: ServedApi) -> None:
    answer, sent = stream_head(served.port, b"GET /health/live?", 4 * 2**20)
    status, detail = status_and_detail(answer)
    assert status == 414
    assert detail == "The request's URL is longer than the 8 KB limit."
    assert sent < 4 * 2**20


def test_a_url_just_under_the_limit_is_served(served: ServedApi) -> None:
    query = "q=" + "a" * (URL_LIMIT - 100)
    assert httpx.get(f"{served.url}/health/live?{query}").status_code == 200


def test_many_headers_that_add_up_past_the_limit_are_refused(served: ServedApi) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 100) for n in range(200))
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert status_and_detail(read_answer(sock))[0] == 431


def test_a_slow_head_is_cut_off_with_408(served: ServedApi) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 5 * HEAD_TIMEOUT_S:
            if select.select([sock], [], [], 0.2)[0]:
                answer = read_answer(sock)
                break
            try:
                sock.sendall(b"a")  # a byte every 0.2 s: never a whole head
            except OSError:
                answer = read_answer(sock)
                break
    status, detail = status_and_detail(answer)
    assert status == 408
    assert detail == f"The request's headers did not arrive within {HEAD_TIMEOUT_S} s."


def test_a_silent_connection_is_closed_after_the_head_timeout(served: ServedApi) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        assert read_answer(sock, timeout_s=5 * HEAD_TIMEOUT_S) == b""
        sock.settimeout(0.5)
        assert sock.recv(1) == b""  # closed by the server, not timed out here


def test_bodies_keep_alive_and_pipelining_are_unaffected(served: ServedApi) -> None:
    # A 40 KB form body arriving with its head in one write is a body, not a header.
    form = b"username=nobody%40example.com&password=" + b"x" * 40_000
    request = (
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(form)
    ) + form
    live = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    closing = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(request + live + live + closing)  # pipelined on one connection
        answer = read_answer(sock)
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [401, 200, 200, 200]


def test_a_body_no_route_reads_does_not_hold_its_connection(served: ServedApi) -> None:
    """A stranger's upload is 401 at the door before its body is read, and a route such as the
    probe reads no body: a client that went on sending the rest a byte every few seconds held
    its connection for good (2,000 of them, 2,000 open files), since each byte put off the
    keep-alive timeout and no body timer runs where nothing reads. Now the connection ends a
    moment after the answer."""
    upload = (
        b"POST /model/predict HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 19000000\r\n\r\n"
    )
    probe = b"GET /health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"
    for head, status in ((upload, 401), (probe, 200)):
        answer, open_after_s = trickle_after_answer(served.port, head + b"a" * 10)
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:100]
        assert open_after_s < 5, head


def test_large_bodies_are_refused_before_being_read_except_on_upload_routes(
    served: ServedApi,
) -> None:
    """30 connections at once each announce a 20 MB multipart body to a JSON or form route:
    each gets 413 from its headers alone, without a byte of the body sent."""
    paths = ["/login", "/user/", "/feedback/"] * 10

    def announce(path: str) -> tuple[int, str]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {20 * 2**20}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(head.encode())
            return status_and_detail(read_answer(sock, timeout_s=5))

    with ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(announce, paths))
    assert answers == [
        (
            413,
            "The request body is larger than the 64 KiB limit (only image uploads may be larger).",
        )
    ] * len(paths)


def test_a_chunked_body_is_cut_off_at_its_limit(served: ServedApi) -> None:
    head = (
        b"POST /feedback/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head)
        sent = 0
        while sent < 8 * 2**20 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"10000\r\n" + CHUNK + b"\r\n")
            except OSError:
                break
            sent += len(CHUNK)
        status, _detail = status_and_detail(read_answer(sock))
    assert status == 413
    assert sent < 8 * 2**20


def test_endless_trailers_after_a_chunked_body_are_cut_off(served: ServedApi) -> None:
    """A chunked body that ends at once and is followed by trailers without end: httptools
    joined them and uvicorn kept each one, so a stranger's login grew the API by 345 MB in a
    second (held until the body pause, 30 s). Now what is not body counts against the head's
    cap: the connection ends after 16 KB of them."""
    head = (
        b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n0\r\n"
    )
    trailer = b"X-Trailer: " + b"t" * 1000 + b"\r\n"
    with (
        PeakMemory(served.child.pid) as memory,
        socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock,
    ):
        sock.sendall(head)
        sent = 0
        while sent < 64 * 2**20:
            try:
                sock.sendall(trailer * 64)
            except OSError:
                break
            sent += 64 * len(trailer)
        read_answer(sock, timeout_s=5)
    assert sent < 8 * 2**20, sent
    assert memory.grown_mb < 16, f"the API grew {memory.grown_mb:.0f} MB"


def test_a_head_pipelined_behind_a_body_is_capped_too(served: ServedApi) -> None:
    """The read in which a body ended was fed whole, and the next head's bytes in it were not
    counted: a 17 KB head sent behind a login form's body was served."""
    form = b"username=nobody%40example.com&password=x"
    login = (
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
        b"\r\nContent-Length: %d\r\n\r\n" % len(form)
    )
    large = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-F: " + b"f" * 17_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(login)
        time.sleep(0.3)  # the head is read: the body and the next head come in one read
        sock.sendall(form + large)
        answer = read_answer(sock)
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert 200 not in statuses, statuses
    assert statuses in ([401, 431], [401], [431], []), statuses


def test_a_request_pipelined_behind_an_answered_one_keeps_its_connection(
    served: ServedApi,
) -> None:
    """The connection ends when an answered request's body was left unread, not when the next
    request, started as the first one's answer ends, is still receiving its own body."""
    form = b"username=nobody%40example.com&password=x"
    login = (
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
        b"\r\nContent-Length: %d\r\n\r\n" % len(form)
    )
    live = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(live + login + form[:10])
        time.sleep(0.5)  # the probe is answered while the login's body is still arriving
        sock.sendall(
            form[10:] + b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = read_answer(sock)
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [200, 401, 200]


def test_a_chunked_upload_in_small_chunks_is_served(served: ServedApi) -> None:
    token = signed_up(served.url, "chunked")
    files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
    request = httpx.Request("POST", served.url, files=files)
    content_type = request.headers["Content-Type"]
    body = request.read()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 16):  # framing half the size of the body
            yield body[start : start + 16]

    answer = httpx.post(
        f"{served.url}/model/predict",
        content=pieces(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == "Eskimo_dog"


def test_strangers_cannot_hold_the_upload_budget_with_bodies_they_never_send(
    tmp_path: Path, model_dir: Path
) -> None:
    """The door holds a request's declared bytes while its body arrives, and the body of an
    upload came in before its token was looked at: three strangers announcing a third of a
    4 MB budget each and sending nothing held all of it, and every user's upload was 503 for
    as long as they kept their connections open. Now a request without a valid token is 401
    at the door."""
    strangers: list[socket.socket] = []
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        model_dir=model_dir,
        model_threads=1,
        max_pending_bytes=4 * 2**20,
    ) as api:
        try:
            account = {"name": "Owner", "email": "owner@example.com", "password": "correct horse b"}
            assert httpx.post(f"{api.url}/user/", json=account).status_code == 201
            login = {"username": account["email"], "password": account["password"]}
            token = httpx.post(f"{api.url}/login", data=login).json()["access_token"]
            credentials_and_paths = [
                ("", "/model/predict"),
                ("Authorization: Bearer forged\r\n", "/model/predict/"),  # either spelling
                ("Authorization: x\r\n", "/model/jobs/"),
            ]
            for credentials, path in credentials_and_paths:
                stranger = socket.create_connection(("127.0.0.1", api.port), timeout=10)
                stranger.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
                    + b"Content-Type: multipart/form-data; boundary=b\r\n"
                    + credentials.encode()
                    + f"Content-Length: {4 * 2**20 // 3}\r\n\r\n".encode()
                )
                strangers.append(stranger)
            time.sleep(0.5)  # the door has seen them
            files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
            owner = httpx.post(
                f"{api.url}/model/predict",
                files=files,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert owner.status_code == 200, owner.text
            for stranger in strangers:
                status = stranger.makefile("rb").readline().split()[1]
                assert status == b"401"
        finally:
            for stranger in strangers:
                stranger.close()


def test_an_answer_left_unread_ends_its_connection(model_dir: Path, tmp_path: Path) -> None:
    """A client that asked for its stored image and read none of it held the request, its
    buffers and the open file for as long as it kept the connection (30 of them for minutes)."""
    noise = np.random.default_rng(0).integers(0, 256, (2_500, 2_500, 3), dtype=np.uint8)
    picture = io.BytesIO()
    Image.fromarray(noise).save(picture, "JPEG", quality=95)  # 7 MB: more than buffers hold
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        model_dir=model_dir,
        model_threads=1,
        send_pause_s=1,
    ) as api:
        bearer = signed_up(api.url, "reader")
        answer = httpx.post(
            f"{api.url}/model/predict",
            files={"file": ("noise.jpeg", picture.getvalue(), "image/jpeg")},
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=60,
        )
        prediction_id = answer.json()["prediction_id"]
        with socket.socket() as unread:
            unread.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            unread.connect(("127.0.0.1", api.port))
            unread.sendall(
                f"GET /model/predictions/{prediction_id}/image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {bearer}\r\n\r\n".encode()
            )
            time.sleep(3)  # reading nothing, past the pause
            received = read_answer(unread, timeout_s=10)
        assert b" 200 " in received[:20]
        assert len(received) < len(picture.getvalue())  # dropped, not sent whole
        assert "it read nothing of its answer for 1 s" in api.output()
