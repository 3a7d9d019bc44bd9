"""Logins that renew: /login with the scope offline_access, /login/refresh and /logout."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imgclf.api.auth.sessions import MAX_SESSIONS_PER_USER, start_session
from imgclf.api.state import app_state
from imgclf.api.users.service import AccountGoneError, delete_user
from imgclf.db.models import LoginSession, User

from .conftest import PASSWORD, Caller
from .lock_order import meet


def log_in(client: TestClient, email: str, scope: str = "offline_access") -> dict[str, object]:
    answer = client.post("/login", data={"username": email, "password": PASSWORD, "scope": scope})
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def stored_sessions(app: FastAPI) -> int:
    with app_state(app).database.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(LoginSession)) or 0)


def test_a_refresh_token_only_for_offline_access_stored_hashed(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    plain = log_in(client, alice.email, scope="")
    assert plain["refresh_token"] is None
    assert plain["expires_in"] == 30 * 60
    assert stored_sessions(app) == 0  # scripts and load tests leave no rows

    body = log_in(client, alice.email)
    refresh_token = body["refresh_token"]
    assert isinstance(refresh_token, str)
    assert len(refresh_token) >= 43
    assert body["refresh_expires_in"] == 7 * 86400
    with app_state(app).database.transaction() as session:
        hashes = list(session.scalars(select(LoginSession.token_hash)))
    assert len(hashes) == 1
    assert refresh_token not in hashes[0]


def test_refresh_gives_working_access_tokens_until_logout(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    refresh_token = log_in(client, alice.email)["refresh_token"]
    for _ in range(2):  # not rotated: every tab sharing it keeps working
        renewed = client.post("/login/refresh", json={"refresh_token": refresh_token})
        assert renewed.status_code == 200
        assert renewed.json()["refresh_token"] is None
        headers = {"Authorization": f"Bearer {renewed.json()['access_token']}"}
        assert client.get("/user/me", headers=headers).json()["id"] == alice.id

    assert client.post("/logout", json={"refresh_token": refresh_token}).status_code == 204
    ended = client.post("/login/refresh", json={"refresh_token": refresh_token})
    assert ended.status_code == 401
    assert ended.json() == {"detail": "Your login has ended; log in again"}
    # Logging out twice, or with a token never issued, is not an error.
    assert client.post("/logout", json={"refresh_token": "nope"}).status_code == 204


def test_unknown_oversized_and_expired_refresh_tokens_are_refused(
    database_url: str, make_user: Callable[..., Caller], client: TestClient
) -> None:
    alice = make_user()
    for token in ("x" * 43, "x" * 129, ""):
        answer = client.post("/login/refresh", json={"refresh_token": token})
        assert answer.status_code in (401, 422), token
        assert isinstance(answer.json()["detail"], str | list)

    from imgclf.api.app import create_app
    from imgclf.settings import Settings

    brief = create_app(Settings(database_url=database_url, session_days=1e-9))
    with TestClient(brief) as short:
        refresh_token = log_in(short, alice.email)["refresh_token"]
        answer = short.post("/login/refresh", json={"refresh_token": refresh_token})
    assert answer.status_code == 401


def test_a_deleted_users_refresh_token_ends_with_the_user(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    refresh_token = log_in(client, alice.email)["refresh_token"]
    assert client.delete(f"/user/{alice.id}", headers=alice.headers).status_code == 204
    answer = client.post("/login/refresh", json={"refresh_token": refresh_token})
    assert answer.status_code == 401
    assert stored_sessions(app) == 0


def test_a_user_keeps_only_the_newest_sessions(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    bobs = log_in(client, bob.email)["refresh_token"]
    tokens = [
        log_in(client, alice.email)["refresh_token"] for _ in range(MAX_SESSIONS_PER_USER + 2)
    ]
    assert stored_sessions(app) == MAX_SESSIONS_PER_USER + 1  # Bob's is not Alice's to end
    for token, status in ((tokens[1], 401), (tokens[2], 200), (tokens[-1], 200), (bobs, 200)):
        assert client.post("/login/refresh", json={"refresh_token": token}).status_code == status


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_login_and_its_accounts_deletion_wait_for_each_other_without_a_deadlock(
    app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    """PostgreSQL: a login sweeps its user's expired sessions (locking their rows) while the
    account is being deleted. The login holds the user's row before it sweeps, so the deletion
    waits for it, and the login ends first; it used to reach the user's row last, through its
    new session's foreign key, while the deletion's cascade waited for the swept rows: a
    deadlock, and a 503 for one of them."""
    alice = make_user()
    database, upload_dir = app_state(app).database, app_state(app).settings.upload_dir
    with database.transaction() as session:
        expired = datetime.now(UTC) - timedelta(days=1)
        session.add(LoginSession(user_id=alice.id, token_hash="0" * 64, expires_at=expired))

    def log_in(session: Session) -> str:
        return start_session(session, alice.id, timedelta(days=30))

    def delete(session: Session) -> None:
        delete_user(session, session.get_one(User, alice.id), upload_dir)

    login, deletion = meet(database, log_in, "DELETE FROM login_sessions", delete)
    assert isinstance(login.result(), str)
    assert deletion.exception() is None
    assert stored_sessions(app) == 0


def test_a_login_whose_account_is_deleted_before_its_session_is_refused(
    app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    """The password checked out, then the account went before the session was stored."""
    alice = make_user()
    with app_state(app).database.transaction() as session:
        delete_user(session, session.get_one(User, alice.id), app_state(app).settings.upload_dir)
    with app_state(app).database.transaction() as session, pytest.raises(AccountGoneError):
        start_session(session, alice.id, timedelta(days=30))
