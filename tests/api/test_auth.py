"""POST /login and the bearer tokens it issues: what is accepted and what is refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from imgclf.api.app import create_app
from imgclf.api.security import create_access_token
from imgclf.api.state import app_state
from imgclf.db.models import User
from imgclf.settings import Settings

from .conftest import PASSWORD, Caller

INVALID = {"detail": "Could not validate credentials"}


def test_login_returns_a_bearer_token_naming_the_user(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice = make_user(email="alice@example.com")
    answer = client.post(
        "/login",
        data={
            "username": "Alice@Example.com",  # emails are compared lower-cased
            "password": PASSWORD,
            "grant_type": "",
            "scope": "",
            "client_id": "",
            "client_secret": "",
        },
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "bearer"
    secret = app_state(app).settings.secret_key.get_secret_value()
    claims = jwt.decode(body["access_token"], secret, algorithms=["HS256"])
    assert claims["sub"] == str(alice.id)
    assert claims["exp"] - claims["iat"] == 30 * 60
    me = client.get("/user/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["email"] == "alice@example.com"


def test_the_admin_from_settings_can_log_in(client: TestClient) -> None:
    answer = client.post("/login", data={"username": "admin@example.com", "password": "admin"})
    assert answer.status_code == 200


def test_a_login_renews_a_password_hash_made_at_an_older_cost(
    settings: Settings, client: TestClient
) -> None:
    """Once the hash cost is raised, a user's next login stores their hash at the new cost
    (it would otherwise keep the old one for good); a wrong password changes nothing."""
    account = {"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    assert client.post("/user/", json=account).status_code == 201
    raised = settings.model_copy(
        update={"password_hash_time_cost": 2, "password_hash_memory_kib": 2048}
    )
    app = create_app(raised)
    with TestClient(app) as later:

        def stored() -> str:
            with app_state(app).database.transaction() as session:
                query = select(User.hashed_password).where(User.email == account["email"])
                return str(session.scalars(query).one())

        made_before = stored()
        assert "m=1024,t=1," in made_before
        form = {"username": account["email"], "password": "not the password"}
        assert later.post("/login", data=form).status_code == 401
        assert stored() == made_before
        form["password"] = PASSWORD
        assert later.post("/login", data=form).status_code == 200
        renewed = stored()
        assert "m=2048,t=2," in renewed
        assert later.post("/login", data=form).status_code == 200
        assert stored() == renewed  # once


def test_a_renewed_hash_the_database_refuses_to_store_still_logs_in(tmp_path: Path) -> None:
    """Renewal is a chance taken: a database that refuses the write fails no login."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'renewal.db'}")
    account = {"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    with TestClient(create_app(settings)) as first:
        assert first.post("/user/", json=account).status_code == 201
    engine = create_engine(settings.resolved_database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER keep_hashes BEFORE UPDATE OF hashed_password ON users "
            "BEGIN SELECT RAISE(ABORT, 'hashes are kept as they are'); END"
        )
    engine.dispose()
    raised = settings.model_copy(update={"password_hash_time_cost": 2})
    with TestClient(create_app(raised)) as later:
        form = {"username": account["email"], "password": PASSWORD}
        for _ in range(2):  # each login tries again, and each logs in
            assert later.post("/login", data=form).status_code == 200


def test_wrong_password_and_unknown_email_get_the_same_answer(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    wrong_password = client.post("/login", data={"username": alice.email, "password": "nope-nope"})
    unknown_email = client.post(
        "/login", data={"username": "nobody@example.com", "password": PASSWORD}
    )
    for answer in (wrong_password, unknown_email):
        assert answer.status_code == 401
        assert answer.json() == {"detail": "Incorrect email or password"}
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert wrong_password.content == unknown_email.content
    # Every header alike but the request's own id.
    assert wrong_password.headers.pop("X-Request-ID") != unknown_email.headers.pop("X-Request-ID")
    assert dict(wrong_password.headers) == dict(unknown_email.headers)


def test_an_email_no_account_can_have_is_just_a_wrong_login(client: TestClient) -> None:
    answer = client.post("/login", data={"username": "a\x00b@example.com", "password": "x"})
    assert (answer.status_code, answer.json()) == (401, {"detail": "Incorrect email or password"})


def test_login_form_fields_are_required(client: TestClient) -> None:
    answer = client.post("/login", data={"username": "alice@example.com"})
    assert answer.status_code == 422
    assert answer.json() == {"detail": "body.password: Field required"}


def test_no_token_is_401_not_authenticated(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Basic YWRtaW46YWRtaW4="}):
        # The upload routes refuse before their body is read, in the same words.
        for method, path in (
            ("GET", "/user/me"),
            ("POST", "/model/predict"),
            ("POST", "/model/jobs"),
        ):
            answer = client.request(method, path, headers=headers)
            assert answer.status_code == 401, path
            assert answer.json() == {"detail": "Not authenticated"}, path
            assert answer.headers["WWW-Authenticate"] == "Bearer"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _bad_tokens(app: FastAPI, user_id: int) -> dict[str, str]:
    secret = app_state(app).settings.secret_key.get_secret_value()
    now = datetime.now(UTC)
    claims = {"sub": str(user_id), "iat": now, "exp": now + timedelta(minutes=5)}

    def sign(payload: dict[str, object], key: str = secret, **kwargs: object) -> str:
        return jwt.encode(payload, key, algorithm="HS256", **kwargs)  # type: ignore[arg-type]

    valid = sign(claims)
    header, payload, signature = valid.split(".")
    other = {**claims, "sub": str(user_id + 1)}
    return {
        "expired": create_access_token(
            user_id, app_state(app).settings, now=now - timedelta(minutes=31)
        ),
        "tampered payload": f"{header}.{_b64({**other, 'iat': 0, 'exp': 4e9})}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "other key": sign(claims, "another-secret-key-that-is-long-enough"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "HS512": jwt.encode(claims, secret, algorithm="HS512"),
        "missing sub": sign({k: v for k, v in claims.items() if k != "sub"}),
        "missing exp": sign({k: v for k, v in claims.items() if k != "exp"}),
        "missing iat": sign({k: v for k, v in claims.items() if k != "iat"}),
        "future iat": sign({**claims, "iat": now + timedelta(minutes=3)}),
        "non-numeric sub": sign({**claims, "sub": "admin"}),
        "huge sub": sign({**claims, "sub": str(10**30)}),
        "garbage": "not-a-jwt",
    }


def test_bad_tokens_are_refused_with_one_answer(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    for name, token in _bad_tokens(app, alice.id).items():
        answer = client.get("/user/me", headers={"Authorization": f"Bearer {token}"})
        assert (answer.status_code, answer.json()) == (401, INVALID), name
        assert answer.headers["WWW-Authenticate"] == "Bearer", name


def test_a_deleted_users_token_is_refused(
    client: TestClient, make_user: Callable[..., Caller], admin: Caller
) -> None:
    alice = make_user()
    assert client.delete(f"/user/{alice.id}", headers=admin.headers).status_code == 204
    answer = client.get("/user/me", headers=alice.headers)
    assert (answer.status_code, answer.json()) == (401, INVALID)


def test_user_ids_are_never_reused(
    client: TestClient, make_user: Callable[..., Caller], admin: Caller
) -> None:
    alice = make_user()
    client.delete(f"/user/{alice.id}", headers=admin.headers)
    assert make_user().id > alice.id
    assert client.get("/user/me", headers=alice.headers).status_code == 401
