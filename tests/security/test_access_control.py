"""Authorization and authentication under attack (OWASP API Top 10: BOLA, mass assignment, broken
authentication, excessive data exposure), beyond what tests/api already checks.

Already covered there, and not repeated: 403 on another user's ``/user/{id}``, is_admin and
user_id refused in bodies, alg none / HS512 / expired / tampered / missing-claim tokens, the
per-email and per-address 429, and the throttle's window on a fake clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from imgclf.api.app import create_app
from imgclf.api.state import app_state
from imgclf.db.models import User
from imgclf.settings import Settings
from tests.api.conftest import PASSWORD, Caller
from tests.security.conftest import Service
from tests.security.forged_tokens import RsaKey, hmac_token, rs256, unsigned
from tests.support import DEFAULT_ARGON2, dog_upload

INVALID = {"detail": "Could not validate credentials"}
FEEDBACK = {
    "feedback": "right",
    "score": 0.62,
    "predicted_class": "Eskimo_dog",
    "image_file_name": "0a7c757a80f2c5b13fa7a2a47a683593.jpeg",
}
SECRET = "a-test-secret-key-that-must-never-be-shown-anywhere-0123456789"
ADMIN_PASSWORD = "admin-password-that-must-never-be-shown"
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


# Object-level authorization ------------------------------------------------------------------


def wait_for_job(service: Service, caller: Caller, job_id: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = service.client.get(f"/model/jobs/{job_id}", headers=caller.headers)
        if answer.json()["status"] != "pending":
            return
        time.sleep(0.05)
    raise AssertionError("the job never finished")


def owned_objects(service: Service, owner: Caller) -> dict[str, Any]:
    """One of each thing a user can own, made through the API."""
    client = service.client
    prediction = client.post("/model/predict", files=dog_upload(), headers=owner.headers).json()
    feedback = client.post(
        "/feedback/",
        json={**FEEDBACK, "prediction_id": prediction["prediction_id"]},
        headers=owner.headers,
    ).json()
    job_id = client.post("/model/jobs", files=dog_upload(), headers=owner.headers).json()["job_id"]
    wait_for_job(service, owner, job_id)
    return {
        "user_id": owner.id,
        "feedback_id": feedback["id"],
        "job_id": job_id,
        "prediction_id": prediction["prediction_id"],
        "name": prediction["model"].rpartition("@")[0],  # a model: nobody's, the admins' to swap
    }


# For each route that names an object: who gets what. "owner" is the object's user; "admin" is
# another user who is an admin. Routes and verbs not listed must not exist (405).
EXPECTED = {
    ("GET", "/user/{user_id}"): {"owner": 200, "other": 403, "admin": 200, "anonymous": 401},
    ("DELETE", "/user/{user_id}"): {"owner": 204, "other": 403, "admin": 204, "anonymous": 401},
    ("GET", "/feedback/{feedback_id}"): {
        "owner": 200,
        "other": 403,
        "admin": 200,
        "anonymous": 401,
    },
    # Another user's prediction is "not found", so ids do not tell which exist.
    ("GET", "/model/predictions/{prediction_id}/image"): {
        "owner": 200,
        "other": 404,
        "admin": 200,
        "anonymous": 401,
    },
    # Jobs are private to whoever queued them, admins included.
    ("GET", "/model/jobs/{job_id}"): {"owner": 200, "other": 403, "admin": 403, "anonymous": 401},
    # Admins only (an admin's empty body is refused by its schema, after the role check).
    ("PUT", "/models/{name}/live"): {"owner": 403, "other": 403, "admin": 422, "anonymous": 401},
    ("PUT", "/models/{name}/shadow"): {"owner": 403, "other": 403, "admin": 422, "anonymous": 401},
    ("GET", "/models/{name}/shadow"): {"owner": 403, "other": 403, "admin": 200, "anonymous": 401},
    ("DELETE", "/models/{name}/shadow"): {
        "owner": 403,
        "other": 403,
        "admin": 204,
        "anonymous": 401,
    },
}


def test_the_table_names_every_route_that_takes_an_id(embedded: Service) -> None:
    routes = {
        (method.upper(), path)
        for path, operations in embedded.app.openapi()["paths"].items()
        if "{" in path
        for method in operations
    }
    assert routes == set(EXPECTED), "a new id-taking route needs its row in EXPECTED"


@pytest.mark.parametrize("path", sorted({path for _method, path in EXPECTED}))
def test_every_verb_on_every_id_route_for_every_kind_of_caller(
    embedded: Service, path: str
) -> None:
    owner, other = embedded.make_user("Owner"), embedded.make_user("Other")
    admin = embedded.make_user("Second admin", is_admin=True)
    ids = owned_objects(embedded, owner)
    url = path.format(**ids)
    callers: dict[str, dict[str, str]] = {
        "anonymous": {},
        "other": other.headers,
        "admin": admin.headers,
    }

    # Deleting comes last, and only for the owner or the admin: it ends the owner.
    for method in sorted(ALL_METHODS, key=lambda m: m == "DELETE"):
        expected = EXPECTED.get((method, path))
        for who, headers in callers.items():
            if expected is not None and expected[who] in (204,):
                continue
            answer = embedded.client.request(method, url, headers=headers)
            want = expected[who] if expected else 405
            assert answer.status_code == want, (method, url, who, answer.text)
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            if want >= 400:
                assert set(answer.json()) == {"detail"}
                assert str(owner.email) not in answer.text  # a refusal shows nothing of theirs
        if expected is not None and method != "DELETE":
            answer = embedded.client.request(method, url, headers=owner.headers)
            assert answer.status_code == expected["owner"], (method, url, answer.text)

    # The owner's things survived everything above, then the owner may delete themselves.
    assert embedded.client.get("/user/me", headers=owner.headers).status_code == 200
    if path == "/user/{user_id}":
        assert embedded.client.delete(url, headers=owner.headers).status_code == 204
        assert embedded.client.get("/user/me", headers=owner.headers).json() == INVALID
        victim = embedded.make_user("Victim")
        victim_url = path.format(user_id=victim.id)
        assert embedded.client.delete(victim_url, headers=admin.headers).status_code == 204


def test_lists_hold_only_your_own_whatever_the_query_says(embedded: Service) -> None:
    alice, bob = embedded.make_user("Alice"), embedded.make_user("Bob")
    alice_ids = owned_objects(embedded, alice)
    for path in ("/model/predictions", "/feedback/"):
        for query in ("", f"?user_id={alice.id}", f"?owner={alice.id}&all=true", "?limit=100"):
            answer = embedded.client.get(path + query, headers=bob.headers)
            assert answer.status_code == 200
            assert answer.json() == [], (path, query)
        mine = embedded.client.get(path, headers=alice.headers).json()
        assert len(mine) >= 1
    prediction = alice_ids["prediction_id"]
    feedback = {**FEEDBACK, "prediction_id": prediction}
    stolen = embedded.client.post("/feedback/", json=feedback, headers=bob.headers)
    assert (stolen.status_code, stolen.json()) == (
        404,
        {"detail": f"Prediction {prediction} not found"},
    )


# Mass assignment ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{"id": 1}, {"is_admin": True}, {"hashed_password": "x"}, {"created_at": "2000-01-01"}],
)
def test_sign_up_refuses_fields_it_does_not_take(embedded: Service, extra: dict[str, Any]) -> None:
    body = {"name": "Mallory", "email": f"m{id(extra)}@example.com", "password": PASSWORD}
    answer = embedded.client.post("/user/", json={**body, **extra})
    assert answer.status_code == 422
    assert "Extra inputs are not permitted" in answer.json()["detail"]


@pytest.mark.parametrize("extra", [{"id": 1}, {"user_id": 1}, {"created_at": "2000-01-01"}])
def test_feedback_refuses_fields_it_does_not_take(embedded: Service, extra: dict[str, Any]) -> None:
    mallory = embedded.make_user("Mallory")
    answer = embedded.client.post("/feedback/", json={**FEEDBACK, **extra}, headers=mallory.headers)
    assert answer.status_code == 422
    assert "Extra inputs are not permitted" in answer.json()["detail"]


def test_extra_form_fields_are_ignored_never_applied(embedded: Service) -> None:
    admin, mallory = embedded.admin(), embedded.make_user("Mallory")
    login = embedded.client.post(
        "/login",
        data={"username": mallory.email, "password": PASSWORD, "is_admin": "true", "sub": "1"},
    )
    token = login.json()["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == str(mallory.id)
    headers = {"Authorization": f"Bearer {token}"}
    assert embedded.client.get("/user/", headers=headers).status_code == 403

    uploaded = embedded.client.post(
        "/model/predict",
        files=dog_upload(),
        data={"user_id": str(admin.id), "prediction_id": "1", "label": "cat"},
        headers=headers,
    ).json()
    assert uploaded["prediction"] == "Eskimo_dog"
    mine = embedded.client.get("/model/predictions", headers=headers).json()
    assert [p["id"] for p in mine] == [uploaded["prediction_id"]]
    theirs = embedded.client.get("/model/predictions?limit=100", headers=admin.headers).json()
    assert uploaded["prediction_id"] not in [p["id"] for p in theirs]


def test_admin_rights_come_from_the_database_not_the_token(embedded: Service) -> None:
    boss = embedded.make_user("Boss", is_admin=True)
    assert embedded.client.get("/user/", headers=boss.headers).status_code == 200
    with app_state(embedded.app).database.transaction() as session:
        session.execute(update(User).where(User.id == boss.id).values(is_admin=False))
    assert embedded.client.get("/user/", headers=boss.headers).status_code == 403


# Tokens ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> RsaKey:
    return RsaKey.generate()


def forged_tokens(service: Service, user_id: int, key: RsaKey) -> dict[str, str]:
    now = datetime.now(UTC)
    claims = {"sub": str(user_id), "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 600}
    pem = key.public_pem().encode()
    secret = service.settings.secret_key.get_secret_value()
    return {
        "RS256 signed with the attacker's key": rs256(claims, key),
        "RS256 carrying its own jwk": rs256(claims, key, jwk=key.jwk()),
        "RS256 pointing at a jku": rs256(claims, key, jku="https://evil.example/jwks.json"),
        "header RS256, HMAC'd with the public key": hmac_token(claims, pem, alg="RS256"),
        "HS256 HMAC'd with the public key": hmac_token(claims, pem),
        "HS256 HMAC'd with the secret, header alg RS256": hmac_token(
            claims, secret.encode(), alg="RS256"
        ),
        "alg None": unsigned(claims, "None"),
        "alg NONE": unsigned(claims, "NONE"),
        "alg none, HMAC'd signature": unsigned(claims) + "c2lnbmF0dXJl",
        "empty HMAC key": hmac_token(claims, b""),
        "not yet valid (nbf)": jwt.encode({**claims, "nbf": claims["exp"]}, secret, "HS256"),
        "expired a second ago": jwt.encode({**claims, "exp": claims["iat"] - 1}, secret, "HS256"),
        "sub as a number": jwt.encode({**claims, "sub": user_id}, secret, "HS256"),
        "sub 0": jwt.encode({**claims, "sub": "0"}, secret, "HS256"),
        "sub negative": jwt.encode({**claims, "sub": "-1"}, secret, "HS256"),
        "sub a list": jwt.encode({**claims, "sub": [str(user_id)]}, secret, "HS256"),
        "sub an email": jwt.encode({**claims, "sub": "admin@example.com"}, secret, "HS256"),
        "three dots": "a.b.c.d",
        "empty": "",
    }


def test_forged_tokens_are_refused_on_every_kind_of_route(
    embedded: Service, rsa_key: RsaKey
) -> None:
    victim = embedded.make_user("Victim", is_admin=True)
    routes: list[Callable[[dict[str, str]], httpx.Response]] = [
        lambda h: embedded.client.get("/user/me", headers=h),
        lambda h: embedded.client.get("/user/", headers=h),
        lambda h: embedded.client.post("/feedback/", json=FEEDBACK, headers=h),
        lambda h: embedded.client.post("/model/predict", files=dog_upload(), headers=h),
    ]
    for label, token in forged_tokens(embedded, victim.id, rsa_key).items():
        for call in routes:
            answer = call({"Authorization": f"Bearer {token}"})
            assert answer.status_code == 401, (label, answer.text)
            assert answer.json() in (INVALID, {"detail": "Not authenticated"}), label
    # The real token of the same user works: the refusals above were about the tokens.
    assert embedded.client.get("/user/me", headers=victim.headers).status_code == 200


def test_a_token_is_taken_from_the_authorization_header_only(embedded: Service) -> None:
    alice = embedded.make_user()
    for attempt in (
        {"params": {"access_token": alice.token}},
        {"params": {"token": alice.token}},
        {"cookies": {"access_token": alice.token}},
        {"headers": {"X-Access-Token": alice.token}},
        {"headers": {"Authorization": alice.token}},
        {"headers": {"Authorization": f"Token {alice.token}"}},
    ):
        client = TestClient(embedded.app, cookies=attempt.get("cookies"))
        answer = client.get(
            "/user/me", params=attempt.get("params"), headers=attempt.get("headers")
        )
        assert answer.status_code == 401, attempt


def test_a_deleted_users_token_opens_no_route(embedded: Service) -> None:
    alice = embedded.make_user()
    assert embedded.client.delete(f"/user/{alice.id}", headers=alice.headers).status_code == 204
    for method, path, kwargs in [
        ("POST", "/model/predict", {"files": dog_upload()}),
        ("POST", "/model/jobs", {"files": dog_upload()}),
        ("GET", "/model/predictions", {}),
        ("POST", "/feedback/", {"json": FEEDBACK}),
        ("GET", "/feedback/", {}),
        ("GET", f"/user/{alice.id}", {}),
        ("GET", "/models/quality", {}),
        ("GET", "/models", {}),
        ("PUT", "/models/efficientnet-lite0/live", {"json": {"version": 1}}),
    ]:
        answer = embedded.client.request(method, path, headers=alice.headers, **kwargs)
        assert (answer.status_code, answer.json()) == (401, INVALID), path


def test_a_deleted_users_token_has_the_model_run_no_more(embedded: Service) -> None:
    """The upload path reads no account before the model: a deleted account's token had its
    uploads classified (the model's time spent for nobody) until the record found it gone."""
    alice = embedded.make_user()
    worker = app_state(embedded.app).queue.worker  # type: ignore[union-attr]
    assert embedded.client.delete(f"/user/{alice.id}", headers=alice.headers).status_code == 204
    classified = worker.jobs_done
    for _ in range(3):
        answer = embedded.client.post("/model/predict", files=dog_upload(), headers=alice.headers)
        assert (answer.status_code, answer.json()) == (401, INVALID)
    assert worker.jobs_done == classified


def test_an_account_deleted_elsewhere_has_the_model_run_once_more_at_most(
    embedded: Service,
) -> None:
    """Deleted through another API process (here: in the database, behind this one's back),
    an account's token is refused by the record after the model ran; from then on this process
    refuses it before the model runs."""
    alice = embedded.make_user()
    worker = app_state(embedded.app).queue.worker  # type: ignore[union-attr]
    with app_state(embedded.app).database.transaction() as session:
        session.delete(session.get(User, alice.id))
    classified = worker.jobs_done
    for _ in range(3):
        answer = embedded.client.post("/model/predict", files=dog_upload(), headers=alice.headers)
        assert (answer.status_code, answer.json()) == (401, INVALID)
    assert worker.jobs_done == classified + 1


# Login: timing, throttling, and what is never shown ---------------------------------------------


LoginApp = Callable[..., tuple[TestClient, Settings]]


@pytest.fixture
def login_app(tmp_path: Path) -> Iterator[LoginApp]:
    """The API alone (no model needed), with a known secret and admin password."""

    def build(**overrides: Any) -> tuple[TestClient, Settings]:
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / f'login-{len(clients)}.db'}",
            secret_key=SECRET,
            admin_password=ADMIN_PASSWORD,
            **overrides,
        )
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client, settings

    clients: list[TestClient] = []
    yield build
    for client in clients:
        client.__exit__(None, None, None)


def sign_up(client: TestClient, email: str) -> None:
    answer = client.post("/user/", json={"name": "Ada", "email": email, "password": PASSWORD})
    assert answer.status_code == 201


def login(client: TestClient, email: str, password: str) -> httpx.Response:
    return client.post("/login", data={"username": email, "password": password})


@pytest.mark.alone
def test_unknown_email_and_wrong_password_take_the_same_time(login_app: LoginApp) -> None:
    client, _settings = login_app(
        login_max_failures_per_email=1000,
        login_max_failures_per_address=1000,
        # The production cost: the hash must be what the time of a login is made of.
        **DEFAULT_ARGON2,
    )
    sign_up(client, "ada@example.com")
    login(client, "warm@example.com", "warm-up")
    unknown: list[float] = []
    wrong: list[float] = []
    # Interleaved, so drifting load hits both alike. The fastest of each is its own cost, free
    # of what the neighbours' load added; an attacker timing logins does the same. Under a
    # loaded machine one of the two may take a while to get a clean sample, so rounds go on
    # (up to 40) until both have one: a real difference (no hash for unknown emails) never
    # closes, however many rounds run.
    for round_ in range(40):
        for email, times in (("nobody@example.com", unknown), ("ada@example.com", wrong)):
            started = time.perf_counter()
            assert login(client, email, f"not the password {round_}").status_code == 401
            times.append(time.perf_counter() - started)
        fast, slow = sorted([min(unknown), min(wrong)])
        if round_ >= 8 and slow / fast < 1.2:
            break
    assert slow / fast < 1.2, f"unknown email {unknown}, wrong password {wrong}"


def test_a_locked_email_opens_again_when_the_window_passes_however_hard_it_is_hammered(
    login_app: LoginApp,
) -> None:
    client, _settings = login_app(login_max_failures_per_email=2, login_failure_window_s=5)
    sign_up(client, "owner@example.com")
    first_failure = time.monotonic()  # or a little before: the lock-out lasts at least 5 s
    for _ in range(2):
        assert login(client, "owner@example.com", "guess").status_code == 401
    retry_after = 0
    # The attacker keeps trying during the lock-out, until 2 s before it may end (on a busy
    # machine a request can take a while).
    while time.monotonic() - first_failure < 3:
        refused = login(client, "owner@example.com", "guess")
        assert refused.status_code == 429
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= 5
    time.sleep(retry_after + 0.2)
    assert login(client, "owner@example.com", PASSWORD).status_code == 200


def test_the_email_throttle_sees_through_case_and_spaces(login_app: LoginApp) -> None:
    client, _settings = login_app(login_max_failures_per_email=3)
    sign_up(client, "owner@example.com")
    for variant in ("Owner@Example.com", " owner@example.com", "OWNER@EXAMPLE.COM "):
        assert login(client, variant, "guess").status_code == 401
    assert login(client, "owner@example.com", PASSWORD).status_code == 429


def test_forwarded_headers_do_not_reset_the_address_budget(login_app: LoginApp) -> None:
    client, _settings = login_app(login_max_failures_per_address=3)
    for number in range(3):
        assert login(client, f"guess{number}@example.com", "x").status_code == 401
    for spoofed in ("203.0.113.7", "198.51.100.1, 10.0.0.1"):
        answer = client.post(
            "/login",
            data={"username": "other@example.com", "password": "x"},
            headers={"X-Forwarded-For": spoofed, "X-Real-IP": spoofed, "Forwarded": "for=1.2.3.4"},
        )
        assert answer.status_code == 429


def test_no_secret_or_hash_reaches_a_response_or_a_log(
    login_app: LoginApp, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    # What an operator turns on to see the SQL (echo=True; SQLAlchemy keeps its loggers at
    # WARNING): statements with their parameters. Its DEBUG level also dumps every result row,
    # hashes included, by design; SECURITY.md says never to turn that on in production.
    caplog.set_level(logging.INFO, logger="sqlalchemy")
    client, settings = login_app(login_max_failures_per_email=3)
    answers = [
        client.post(
            "/user/", json={"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
        ),
        client.post(
            "/user/", json={"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
        ),
        client.post("/user/", json={"name": "A", "email": "bad", "password": PASSWORD + "x" * 200}),
        login(client, "ada@example.com", PASSWORD),
        login(client, "ada@example.com", "wrong " + PASSWORD),
        login(client, "nobody@example.com", PASSWORD),
        login(client, settings.admin_email, ADMIN_PASSWORD),
        client.post("/login", data={"password": PASSWORD}),
        *[login(client, "ada@example.com", PASSWORD + "!") for _ in range(4)],
    ]
    token = answers[3].json()["access_token"]
    admin_token = answers[6].json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    answers += [
        client.get("/user/me", headers=headers),
        client.get("/user/", headers={"Authorization": f"Bearer {admin_token}"}),
        client.get("/user/me", headers={"Authorization": f"Bearer {token[:-3]}xyz"}),
        client.get("/openapi.json"),
    ]
    assert [a.status_code for a in answers][:8] == [201, 400, 422, 200, 401, 401, 200, 422]
    assert answers[-5].status_code == 429
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert "INSERT INTO users" in caplog.text, "the SQL was not logged, so not checked"
    for answer in answers:
        text = answer.text + str(answer.headers)
        for secret in ("$argon2", "hashed_password", PASSWORD, SECRET, ADMIN_PASSWORD):
            assert secret not in text, (answer.request.url, secret)
    for secret in ("$argon2", PASSWORD, SECRET, ADMIN_PASSWORD):
        assert secret not in logs, secret


# CORS -----------------------------------------------------------------------------------------


def test_configured_cors_allows_only_its_origins_and_never_credentials(login_app: LoginApp) -> None:
    client, _settings = login_app(cors_origins=["https://ui.example"])
    for origin in ("https://evil.example", "null", "https://ui.example.evil.example"):
        preflight = client.options(
            "/user/me",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        assert "access-control-allow-origin" not in preflight.headers, origin
    allowed = client.options(
        "/user/me",
        headers={
            "Origin": "https://ui.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
    assert allowed.headers.get("access-control-allow-credentials") != "true"
