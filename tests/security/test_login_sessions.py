"""Refresh tokens against ``imgclf serve``: what a client holding a password can pile up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from imgclf.api.auth.sessions import MAX_SESSIONS_PER_USER
from tests.support import ServedApi

PASSWORD = "correct horse battery"


def test_logins_cannot_pile_up_refresh_tokens_without_end(model_dir: Path, tmp_path: Path) -> None:
    """Each login with ``offline_access`` stored a refresh token for its whole lifetime (a
    week): a script could add rows for as long as it ran. Now a user keeps the newest ones;
    the oldest end. (The budget of logins per email is raised here, out of the way: without
    it, the rows would pile up as slowly as it lets them.)"""
    logins = MAX_SESSIONS_PER_USER + 10
    with (
        ServedApi(
            tmp_path / "api.log",
            tmp_path / "data",
            model_dir=model_dir,
            model_threads=1,
            login_max_per_email=1000,
        ) as api,
        httpx.Client(base_url=api.url, timeout=30) as client,
    ):
        account = {"name": "Mallory", "email": "mallory@example.com", "password": PASSWORD}
        assert client.post("/user/", json=account).status_code == 201
        form = {"username": account["email"], "password": PASSWORD, "scope": "offline_access"}
        tokens = [client.post("/login", data=form).json()["refresh_token"] for _ in range(logins)]
        renewed = [
            client.post("/login/refresh", json={"refresh_token": token}).status_code
            for token in tokens
        ]
    assert renewed == [401] * 10 + [200] * MAX_SESSIONS_PER_USER
    with sqlite3.connect(tmp_path / "data" / "imgclf.db") as database:
        (rows,) = database.execute("SELECT count(*) FROM login_sessions").fetchone()
    assert rows == MAX_SESSIONS_PER_USER
