"""The service as ``make run`` starts it (``imgclf up``: the API with the real model, and the
UI) on free ports, once per session, and fresh users on it. The UI knows the API only over
HTTP, so its tests talk to a real one."""

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
from imgclf.ui.client import ApiClient, User

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin"
PASSWORD = "correct horse battery"
IMGCLF = str(Path(sys.executable).with_name("imgclf"))
_emails = itertools.count(1)


@dataclass(frozen=True)
class Account:
    user: User
    password: str
    token: str

    @property
    def email(self) -> str:
        return self.user.email


def clean_environment(**values: str) -> dict[str, str]:
    """This process's environment without the developer's IMGCLF_ settings, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCLF_")}
    return env | values


def start_process(
    command: list[str], port: int, cwd: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
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


@dataclass(frozen=True)
class Stack:
    process: subprocess.Popen[bytes]
    api_url: str
    ui_port: int
    log: Path


@pytest.fixture(scope="session")
def stack(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``imgclf up`` (API with its embedded model worker and SQLite, then the UI)."""
    root = tmp_path_factory.mktemp("ui-stack")
    api_port, ui_port = free_port(), free_port()
    env = clean_environment(
        IMGCLF_DATA_DIR=str(root / "data"),
        IMGCLF_MODEL_DIR=str(model_dir),
        IMGCLF_MODEL_THREADS="1",
        IMGCLF_PORT=str(api_port),
        IMGCLF_UI_PORT=str(ui_port),
        # Every test signs up its own user, all from this machine's address.
        IMGCLF_SIGNUP_MAX_PER_ADDRESS="1000",
    )
    log = root / "up.log"
    process = start_process([IMGCLF, "up"], api_port, root, env, log)
    yield Stack(process, f"http://127.0.0.1:{api_port}", ui_port, log)
    stop_process(process)


@pytest.fixture(scope="session")
def api_url(stack: Stack) -> str:
    return stack.api_url


@pytest.fixture
def api(api_url: str) -> Iterator[ApiClient]:
    client = ApiClient(api_url)
    yield client
    client.close()


@pytest.fixture
def account(api: ApiClient) -> Account:
    """A user of its own, signed up through the API, with a token.

    The token is minted with the development secret the API runs with, as ``/login`` would
    make it: Argon2 costs a noticeable fraction of a second on purpose, and the login tests
    go through ``/login`` for real.
    """
    from imgclf.api.security import create_access_token
    from imgclf.settings import Settings

    email = f"ui-user-{os.getpid()}-{next(_emails)}@example.com"
    user = api.sign_up("UI Tester", email, PASSWORD)
    assert isinstance(user, User), user
    return Account(user, PASSWORD, create_access_token(user.id, Settings()))
