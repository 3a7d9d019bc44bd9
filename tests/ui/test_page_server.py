"""The real UI server (``imgclf ui`` alone) against a stranger's requests: it caps request heads
as the API does, ends connections whose bodies it does not read, and sends safe headers.

Streamlit builds its own uvicorn server: before ``imgclf.ui.page_server`` named the API's
protocol for it, three connections sending 100 MB of headers each held 400 MB of the UI
server's memory and slowed every page to 15 s, and an unfinished head was kept for good.
Bounded attacks, on 127.0.0.1 only.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from imgclf.launcher import Child, environment, imgclf_command, wait_until
from imgclf.localservers import free_port, port_open
from imgclf.settings import Settings
from tests.security.raw_http import (
    read_answer,
    status_and_detail,
    stream_head,
    trickle_after_answer,
)
from tests.support import PeakMemory

HEAD_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """The UI server's port and the pid of the process that serves it."""
    root = tmp_path_factory.mktemp("page-server")
    port = free_port()
    settings = {"ui_port": port, "api_url": "http://127.0.0.1:9"}
    env = environment(settings | {"header_timeout_s": HEAD_TIMEOUT_S}, clean=True)
    child = Child("ui", [*imgclf_command(), "ui"], env, root / "ui.log", cwd=root).start()
    try:
        wait_until(lambda: port_open(port), "the UI", 90, [child])
        (server,) = [
            process
            for process in psutil.Process(child.process.pid).children(recursive=True)
            if "page_server" in " ".join(process.cmdline())
        ]
        yield port, server.pid
    finally:
        child.stop()


def test_a_huge_header_is_refused_with_431_holding_nothing(ui: tuple[int, int]) -> None:
    port, pid = ui
    start = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: "
    # Once first, small, and the page once: what a server's first requests load is not counted.
    assert status_and_detail(stream_head(port, start, 2**20)[0])[0] == 431
    assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    with PeakMemory(pid) as memory:
        answer, sent = stream_head(port, start, 64 * 2**20)
    assert status_and_detail(answer) == (
        431,
        "The request's headers are larger than the 16 KB limit.",
    )
    assert sent < 64 * 2**20
    assert memory.grown_mb < 16, f"the UI server grew {memory.grown_mb:.0f} MB"
    assert httpx.get(f"http://127.0.0.1:{port}/_stcore/health").status_code == 200


def test_an_unfinished_head_is_cut_off_with_408(ui: tuple[int, int]) -> None:
    port, _ = ui
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        answer = read_answer(sock, timeout_s=5 * HEAD_TIMEOUT_S)
    assert status_and_detail(answer) == (
        408,
        f"The request's headers did not arrive within {HEAD_TIMEOUT_S} s.",
    )


def test_a_body_the_server_does_not_read_ends_its_connection(ui: tuple[int, int]) -> None:
    port, _ = ui
    head = b"GET /_stcore/health HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"
    answer, open_after_s = trickle_after_answer(port, head)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert open_after_s < 5


@pytest.mark.parametrize("path", ["/", "/_stcore/health", "/no/such/page", "/_stcore/metrics"])
def test_every_answer_forbids_framing_and_sniffing(ui: tuple[int, int], path: str) -> None:
    port, _ = ui
    answer = httpx.get(f"http://127.0.0.1:{port}{path}")
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "no-referrer"


def _open_page(port: int) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{port}/_stcore/stream",
        subprotocols=[Subprotocol("streamlit")],
        open_timeout=10,
        max_size=None,
    )


def test_a_message_sent_in_pieces_and_never_finished_is_cut_off(ui: tuple[int, int]) -> None:
    """Streamlit's 200 MB websocket messages: a stranger's page sending one in pieces, never
    the last, held 190 MB of the server per connection for as long as it answered pings."""
    port, pid = ui
    piece = b"x" * 2**18
    sent = 0

    def pieces() -> Iterator[bytes]:
        nonlocal sent
        while sent < 64 * 2**20:
            sent += len(piece)
            yield piece
        time.sleep(30)  # never the last piece
        yield b""

    def send_unfinished(page: ClientConnection) -> None:
        page.send(pieces())
        page.recv(timeout=10)

    with (
        PeakMemory(pid) as memory,
        _open_page(port) as page,
        pytest.raises(ConnectionClosed),  # "message too big" (1009), or the connection's end
    ):
        send_unfinished(page)
    assert sent <= 8 * 2**20, sent
    assert memory.grown_mb < 32, f"the UI server grew {memory.grown_mb:.0f} MB"


def test_one_address_may_keep_only_so_many_pages_open(ui: tuple[int, int]) -> None:
    port, _ = ui
    pages = []
    try:
        for _ in range(Settings.model_fields["ui_max_pages_per_client"].default):
            pages.append(_open_page(port))
        with pytest.raises(InvalidStatus) as refused:
            _open_page(port)
        assert refused.value.response.status_code == 403
        pages.pop().close()
        pages.append(_open_page(port))  # a page closed makes room for another
    finally:
        for page in pages:
            page.close()
