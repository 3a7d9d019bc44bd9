"""Reading a stored image as a stranger can: clients that ask for a large one and go away
without reading it leave no file open on the server (a real ``imgclf serve``)."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.security.test_exposure import sign_up
from tests.security.test_storage import noise_png, upload
from tests.support import ServedApi

STALLED = 40


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServedApi]:
    root = tmp_path_factory.mktemp("image-reads")
    with ServedApi(root / "api.log", root / "data", model_dir=model_dir, model_threads=1) as api:
        yield api


def uploads_open(served: ServedApi) -> int:
    """Files of the uploads folder the server's processes hold open."""
    folder = str((served.data_dir / "uploads").resolve())
    assert served.child.process is not None
    root = psutil.Process(served.child.process.pid)
    count = 0
    for process in [root, *root.children(recursive=True)]:
        for fd in os.listdir(f"/proc/{process.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{process.pid}/fd/{fd}")
            except OSError:  # closed meanwhile
                continue
            count += target.startswith(folder)
    return count


def wait_for(condition: object, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_clients_that_leave_without_reading_an_image_leave_no_file_open(
    served: ServedApi,
) -> None:
    alice = sign_up(served.url)
    answer = upload(served.url, alice, noise_png(seed=7, side=1400))  # about 6 MB
    assert answer.status_code == 200, answer.text
    request = (
        f"GET /model/predictions/{answer.json()['prediction_id']}/image HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: {alice['Authorization']}\r\n\r\n"
    ).encode()
    clients = []
    for _ in range(STALLED):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing, takes little
        client.connect(("127.0.0.1", served.port))
        client.sendall(request)
        clients.append(client)
    # Each answer is under way, stalled on its client: each holds the file open.
    wait_for(lambda: uploads_open(served) >= STALLED, "the answers never started")

    for client in clients:  # gone mid-way, with a reset
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()

    wait_for(lambda: uploads_open(served) == 0, "files left open after their clients left")
    again = upload(served.url, alice, noise_png(seed=8, side=64))
    assert again.status_code == 200
