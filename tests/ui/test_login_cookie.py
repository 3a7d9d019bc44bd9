"""The routes beside the page that keep the login in an HttpOnly cookie: a one-time code in,
a cookie out; only the page's own script may call them."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import psutil
from starlette.applications import Starlette
from starlette.testclient import TestClient

from imgclf.launcher import Child, environment, imgclf_command, wait_until
from imgclf.localservers import free_port, port_open
from imgclf.ui.login_cookie import COOKIE, FORGET_PATH, HANDOFF, KEEP_PATH, ROUTES, Handoff
from tests.support import PeakMemory

FROM_PAGE = {"X-Requested-By": "imgclf", "Sec-Fetch-Site": "same-origin"}


def client() -> TestClient:
    return TestClient(Starlette(routes=ROUTES), base_url="https://ui.example")


def test_a_code_sets_an_httponly_strict_cookie_once() -> None:
    code = HANDOFF.put("refresh-token-value", 3600)
    answer = client().post(KEEP_PATH, json={"code": code}, headers=FROM_PAGE)
    assert answer.status_code == 204
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=refresh-token-value;")
    for attribute in ("HttpOnly", "Max-Age=3600", "Path=/", "SameSite=strict", "Secure"):
        assert attribute in cookie
    again = client().post(KEEP_PATH, json={"code": code}, headers=FROM_PAGE)
    assert again.status_code == 404
    assert again.json() == {"detail": "Unknown or expired code"}


def test_only_the_pages_own_script_may_call() -> None:
    code = HANDOFF.put("refresh-token-value", None)
    for headers in ({}, {**FROM_PAGE, "Sec-Fetch-Site": "cross-site"}):
        refused = client().post(KEEP_PATH, json={"code": code}, headers=headers)
        assert refused.status_code == 403
        assert "set-cookie" not in refused.headers
        assert client().post(FORGET_PATH, headers=headers).status_code == 403
    assert HANDOFF.waiting(code)  # not spent by the refusals


def test_odd_bodies_are_refused_with_a_reason() -> None:
    for body, status in ((b"[" * 250, 404), (b"\xff", 404), (b"[]", 404), (b" " * 257, 413)):
        answer = client().post(KEEP_PATH, content=body, headers=FROM_PAGE)
        assert answer.status_code == status
        assert "detail" in answer.json()


def test_forgetting_clears_the_cookie() -> None:
    answer = client().post(FORGET_PATH, headers=FROM_PAGE)
    assert answer.status_code == 204
    assert answer.headers["set-cookie"].startswith(f'{COOKIE}="";')
    assert "Max-Age=0" in answer.headers["set-cookie"]


def test_codes_expire() -> None:
    handoff = Handoff(ttl_s=0.0)
    code = handoff.put("refresh-token-value", None)
    assert handoff.take(code) is None


def test_a_stranger_cannot_make_the_ui_server_hold_a_large_body(tmp_path: Path) -> None:
    """The header is no secret (only a browser's other sites cannot add it): any client may
    send it with a body of any size. 64 MB to the real UI server: refused from its headers,
    the server holding next to nothing (it read all 64 MB into memory before)."""
    port = free_port()
    env = environment({"ui_port": port, "api_url": "http://127.0.0.1:9"}, clean=True)
    ui = Child("ui", [*imgclf_command(), "ui"], env, tmp_path / "ui.log", cwd=tmp_path).start()
    try:
        wait_until(lambda: port_open(port), "the UI", 90, [ui])
        streamlit = next(
            p
            for p in psutil.Process(ui.process.pid).children(recursive=True)
            if "page_server" in " ".join(p.cmdline())
        )
        # The same refusal once first, small: what a first request imports is not counted.
        assert _post_large(port, KEEP_PATH, 2**20, FROM_PAGE) == 413
        size = 64 * 2**20
        with PeakMemory(streamlit.pid) as memory:
            status = _post_large(port, KEEP_PATH, size, FROM_PAGE)
        assert status == 413
        assert memory.grown_mb < 16, f"the UI server grew {memory.grown_mb:.0f} MB"
    finally:
        ui.stop()


def _post_large(port: int, path: str, size: int, headers: dict[str, str]) -> int:
    """POST ``size`` bytes of JSON whitespace, sending for as long as the server reads; the
    status of its answer."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{head}Content-Length: {size}\r\n\r\n".encode()
        )
        with contextlib.suppress(OSError):  # the server may answer and close before the end
            for _ in range(size // 2**20):
                connection.sendall(b" " * 2**20)
        return int(connection.makefile("rb").readline().split()[1])
