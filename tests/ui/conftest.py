"""A live API (``imgclf serve`` with the real model, in a subprocess) for the UI's tests, and
fresh users on it. The UI knows the API only over HTTP, so its tests talk to a real one."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imgclf.localservers import ServerUnavailable, free_port, wait_for_port
from imgclf.ui.client import ApiClient, ApiError

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin"
PASSWORD = "correct horse battery"
IMGCLF = str(Path(sys.executable).with_name("imgclf"))
_emails = itertools.count(1)


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    token: str


def clean_environment(**values: str) -> dict[str, str]:
    """This process's environment without the developer's IMGCLF_ settings, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCLF_")}
    return env | values


def start_process(command: list[str], port: int, cwd: Path, env: dict[str, str], log: Path):
    """Start a server and wait for its port; on failure, fail with the end of its log."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, timeout_s=90, process=process)
    except ServerUnavailable as error:
        stop_process(process)
        pytest.fail(f"{command[1]} did not start: {error}\n{log.read_text()[-3000:]}")
    return process


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def api_url(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``imgclf serve`` (embedded model worker, SQLite) on a free port, for the whole session."""
    root = tmp_path_factory.mktemp("ui-api")
    port = free_port()
    env = clean_environment(
        IMGCLF_DATA_DIR=str(root / "data"),
        IMGCLF_MODEL_DIR=str(model_dir),
        IMGCLF_MODEL_THREADS="1",
    )
    process = start_process(
        [IMGCLF, "serve", "--port", str(port)], port, root, env, root / "api.log"
    )
    yield f"http://127.0.0.1:{port}"
    stop_process(process)


@pytest.fixture
def api(api_url: str) -> Iterator[ApiClient]:
    client = ApiClient(api_url)
    yield client
    client.close()


@pytest.fixture
def account(api: ApiClient) -> Account:
    """A user of its own, signed up through the API, with a token."""
    email = f"ui-user-{os.getpid()}-{next(_emails)}@example.com"
    created = api.sign_up("UI Tester", email, PASSWORD)
    assert not isinstance(created, ApiError), created
    token = api.login(email, PASSWORD)
    assert isinstance(token, str), token
    return Account(email, PASSWORD, token)
