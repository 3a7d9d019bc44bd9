"""The service as ``make run`` starts it (``imgclf up``: the API with the real model, and the
UI) on free ports, once per session, and fresh users on it. The UI knows the API only over
HTTP, so its tests talk to a real one."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imgclf.launcher import Child, LaunchFailed, environment, imgclf_command, wait_until
from imgclf.localservers import free_port, port_open
from imgclf.ui.client import Me, User
from tests.support import CHEAP_ARGON2
from tests.ui_api import ApiForTests

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin"
PASSWORD = "correct horse battery"
# Access tokens of the UI's logins live this long, so that tests see them renewed and run out.
ACCESS_TOKEN_SECONDS = 4
BODY_PAUSE_S = 5
_emails = itertools.count(1)


@dataclass(frozen=True)
class Account:
    user: User
    password: str
    token: str

    @property
    def email(self) -> str:
        return self.user.email


@dataclass(frozen=True)
class Stack:
    up: Child
    api_url: str
    ui_port: int
    log: Path

    def wait_for(self, port: int, what: str) -> None:
        """Wait until ``port`` listens; on failure, fail with the end of `imgclf up`'s log."""
        try:
            wait_until(lambda: port_open(port), what, 90, [self.up])
        except LaunchFailed as error:
            pytest.fail(f"{what} did not start: {error}\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def stack(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``imgclf up`` (API with its embedded model worker and SQLite, then the UI), serving the
    test repository's two models (``efficientnet-lite0``, the default, and an INT8
    ``second-model``), so that the page has a choice."""
    root = tmp_path_factory.mktemp("ui-stack")
    api_port, ui_port = free_port(), free_port()
    settings = {"data_dir": root / "data", "model_repository": model_repository}
    settings |= {"model_threads": 1, **CHEAP_ARGON2}
    # Every test signs up its own user, all from this machine's address.
    settings |= {"port": api_port, "ui_port": ui_port, "signup_max_per_address": 1000}
    settings |= {"access_token_minutes": ACCESS_TOKEN_SECONDS / 60}
    # An upload that stops arriving is cut off this soon (30 s by default), for the test of it.
    settings |= {"body_pause_s": BODY_PAUSE_S}
    env = environment(settings, clean=True)
    log = root / "up.log"
    up = Child("up", [*imgclf_command(), "up"], env, log, cwd=root).start()
    stack = Stack(up, f"http://127.0.0.1:{api_port}", ui_port, log)
    try:
        stack.wait_for(api_port, "the API")
        yield stack
    finally:
        up.stop()


@pytest.fixture(scope="session")
def api_url(stack: Stack) -> str:
    return stack.api_url


@pytest.fixture
def api(api_url: str) -> Iterator[ApiForTests]:
    client = ApiForTests(api_url)
    yield client
    client.close()


@pytest.fixture
def account(api: ApiForTests) -> Account:
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


@pytest.fixture
def admin(api: ApiForTests) -> Account:
    """The development admin, with a token minted as ``account``'s are (30 minutes)."""
    from imgclf.api.security import create_access_token
    from imgclf.settings import Settings

    token = api.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert isinstance(token, str), token
    me = api.me(token)
    assert isinstance(me, Me), me
    assert me.is_admin
    return Account(me, ADMIN_PASSWORD, create_access_token(me.id, Settings()))
