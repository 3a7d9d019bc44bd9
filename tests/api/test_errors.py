"""One error shape everywhere: {"detail": "<a sentence>"}, and every route's errors documented."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from imgclf.api.deps import DatabaseDep
from imgclf.api.state import app_state
from imgclf.db.models import User


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'errors.db'}"


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    missing = client.get("/no/such/route")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong = client.put("/user/me")
    assert (wrong.status_code, wrong.json()) == (405, {"detail": "Method Not Allowed"})


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"name": "Ada",', "application/json", "body: malformed JSON"),
        (b"[1, 2, 3]", "application/json", "body: Input should be a valid dictionary"),
        (b'"just a string"', "application/json", "body: Input should be a valid dictionary"),
        (b"", "application/json", "body: Field required"),
    ],
)
def test_malformed_bodies_are_422_with_a_message(
    client: TestClient, body: bytes, content_type: str, expected: str
) -> None:
    answer = client.post("/user/", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 422
    assert isinstance(answer.json()["detail"], str)
    assert answer.json()["detail"].startswith(expected), answer.json()


def test_a_body_that_cannot_be_parsed_is_400(client: TestClient) -> None:
    answer = client.post(
        "/user/", content=b'{"name": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )
    assert (answer.status_code, answer.json()) == (
        400,
        {"detail": "There was an error parsing the body"},
    )


def test_unexpected_errors_are_500_logged_and_roll_back(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    def add_ghost(session: Session) -> None:
        session.add(User(name="Ghost", email="ghost@example.com", hashed_password="x"))
        session.flush()
        raise RuntimeError("the disk is on fire")

    @app.post("/explode")
    async def explode(db: DatabaseDep) -> None:
        await db.run(add_ghost)

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        answer = client.post("/explode")
        assert answer.status_code == 500
        assert answer.json() == {"detail": "Internal server error"}
        assert "the disk is on fire" not in answer.text
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert any("POST /explode" in record.getMessage() for record in caplog.records)
        with app_state(app).database.transaction() as session:
            assert session.scalar(select(User).where(User.email == "ghost@example.com")) is None


def test_every_route_documents_its_errors_in_one_shape(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["components"]["schemas"]["ErrorResponse"]["required"] == ["detail"]
    probes = {"/", "/health/live", "/health/ready", "/metrics"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            errors = {code: r for code, r in operation["responses"].items() if code >= "400"}
            if path not in probes:
                assert errors, f"{method.upper()} {path} documents no error"
            for code, response in errors.items():
                ref = response["content"]["application/json"]["schema"]["$ref"]
                expected = "Readiness" if path == "/health/ready" else "ErrorResponse"
                assert ref.endswith(f"/{expected}"), f"{method.upper()} {path} {code}"


def test_openapi_lists_the_contracts_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"post"} <= set(paths["/login"])
    assert {"post", "get"} <= set(paths["/user/"])
    assert {"get", "delete"} <= set(paths["/user/{user_id}"])
    assert {"post", "get"} <= set(paths["/feedback/"])
    assert "/feedback" not in paths  # the slash-less twin answers, but is not listed twice
    assert set(paths["/user/{user_id}"]["delete"]["responses"]) >= {"204", "401", "403", "404"}
    assert set(paths["/login"]["post"]["responses"]) >= {"200", "401", "422", "429"}
