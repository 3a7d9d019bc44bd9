"""Security headers on every answer; CORS closed unless origins are configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imgclf.api.app import create_app
from imgclf.api.security import create_access_token
from imgclf.api.state import app_state
from imgclf.settings import Settings

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'middleware.db'}"


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    answers = [
        client.get("/"),
        client.get("/user/me"),  # 401
        client.get("/nowhere"),  # 404
        client.post("/user/", json={}),  # 422
        client.get("/docs"),
    ]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (answer.request.url, name)


def test_cors_is_closed_by_default(client: TestClient) -> None:
    preflight = client.options(
        "/login",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert (
        "access-control-allow-origin"
        not in client.get("/", headers={"Origin": "https://evil.example"}).headers
    )


def test_configured_origins_may_call_the_api(database_url: str) -> None:
    settings = Settings(database_url=database_url, cors_origins=["https://ui.example"])
    with TestClient(create_app(settings)) as client:
        allowed = client.options(
            "/login",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
        other = client.get("/", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_oversized_bodies_are_413_before_being_read(client: TestClient) -> None:
    big = b'{"name": "' + b"x" * 70_000 + b'"}'

    def chunked() -> Iterator[bytes]:  # declares no length: counted as it arrives
        yield big[:40_000]
        yield big[40_000:]

    for content in (big, chunked()):
        answer = client.post(
            "/user/", content=content, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 413
        assert answer.json() == {
            "detail": "The request body is larger than the 64 KiB limit "
            "(only image uploads may be larger)."
        }
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    login = client.post("/login", data={"username": "a@example.com", "password": "x" * 70_000})
    assert login.status_code == 413


def test_only_the_upload_routes_take_bodies_as_large_as_the_upload_setting(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, max_upload_bytes=2**20)
    with TestClient(create_app(settings)) as client:
        signed = {"Authorization": f"Bearer {create_access_token(1, settings)}"}
        for path in ("/model/predict", "/model/jobs"):
            within = client.post(path, files={"file": ("a.png", b"x" * 2**20)}, headers=signed)
            assert within.status_code != 413  # read, then refused for something else (no model)
            over = client.post(
                path, files={"file": ("a.png", b"x" * (2**20 + 2**17))}, headers=signed
            )
            assert over.status_code == 413
            assert over.json() == {"detail": "The upload is larger than the 1 MB limit."}
        # Calling a body multipart buys no room on the other routes.
        for path in ("/login", "/user/", "/feedback/"):
            answer = client.post(path, files={"file": ("a.png", b"x" * 100_000)})
            assert answer.status_code == 413, path
            assert "64 KiB limit" in answer.json()["detail"]


def test_every_answer_carries_a_request_id(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url))

    async def fail() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/fails", fail)
    with TestClient(app, raise_server_exceptions=False) as client:
        sent = {"X-Request-ID": "client-chosen-1"}
        # The admission middleware's refusal, sent from outside the routes.
        app_state(app).pending_bytes.hold(app_state(app).pending_bytes.limit, 0)
        signed = {"Authorization": f"Bearer {create_access_token(1, app_state(app).settings)}"}
        busy = client.post("/model/predict", files={"file": ("a.png", b"x")}, headers=sent | signed)
        app_state(app).pending_bytes.release(app_state(app).pending_bytes.limit, 0)
        answers = [
            busy,
            client.get("/", headers=sent),
            client.get("/user/me", headers=sent),  # 401
            client.post("/user/", content=b"x" * 70_000, headers=sent),  # 413
            client.get("/fails", headers=sent),  # 500, answered from outside every middleware
        ]
        assert [answer.status_code for answer in answers] == [503, 200, 401, 413, 500]
        for answer in answers:
            assert answer.headers["X-Request-ID"] == "client-chosen-1", answer.request.url
        made = {client.get("/").headers["X-Request-ID"] for _ in range(3)}
        assert len(made) == 3
        for request_id in made:
            assert len(request_id) == 32
