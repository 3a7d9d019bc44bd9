"""/user/: sign-up, the current user, who may read, list and delete whom."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from imgclf.api.state import app_state
from imgclf.db.models import Feedback, Prediction, User

from .conftest import PASSWORD, Caller
from .test_feedback import add_prediction

FEEDBACK = {
    "feedback": "It is a husky, not an Eskimo dog",
    "score": 0.62,
    "predicted_class": "Eskimo_dog",
    "image_file_name": "0a1b2c.jpg",
}


def test_sign_up_log_in_read_me_leave_feedback_and_list_it(client: TestClient) -> None:
    created = client.post(
        "/user/", json={"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    )
    assert created.status_code == 201
    user = created.json()
    assert user == {"id": user["id"], "name": "Ada", "email": "ada@example.com"}

    login = client.post("/login", data={"username": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 200
    assert login.json()["token_type"] == "bearer"
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    assert client.get("/user/me", headers=headers).json() == user | {"is_admin": False}

    prediction_id = add_prediction(client.app, user["id"])  # type: ignore[arg-type]
    feedback = client.post("/feedback/", json=FEEDBACK, headers=headers)
    assert feedback.status_code == 201
    # The seed's shape, linked to the user's prediction of that image; no verdict given.
    linked = {"prediction_id": prediction_id, "correct": None, "correct_class": None}
    assert feedback.json() == {
        **FEEDBACK,
        "id": feedback.json()["id"],
        "score": 0.6222,  # the prediction's own
        **linked,
    }

    listed = client.get("/feedback/", headers=headers)
    assert listed.status_code == 200
    assert listed.json() == [feedback.json()]


def test_duplicate_email_is_refused_whatever_its_case(client: TestClient) -> None:
    body = {"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    assert client.post("/user/", json=body).status_code == 201
    for email in ("ada@example.com", "Ada@Example.COM"):
        again = client.post("/user/", json={**body, "email": email})
        assert again.status_code == 400
        assert again.json() == {"detail": "The user with this email already exists"}


def test_weak_or_malformed_sign_up_is_422_with_every_reason(client: TestClient) -> None:
    answer = client.post("/user/", json={"name": "A", "email": "not-an-email", "password": "short"})
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert isinstance(detail, str)
    assert "body.name: String should have at least 2 characters" in detail
    assert "body.email: value is not a valid email address" in detail
    assert "body.password: String should have at least 8 characters" in detail
    assert "short" not in detail  # never echo what was sent, least of all a password

    too_long = client.post(
        "/user/", json={"name": "x" * 51, "email": "a@example.com", "password": "p" * 129}
    )
    assert too_long.status_code == 422
    assert "body.name" in too_long.json()["detail"]
    assert "body.password" in too_long.json()["detail"]

    missing = client.post("/user/", json={"email": "a@example.com"})
    assert missing.status_code == 422
    assert "body.name: Field required" in missing.json()["detail"]

    wrong_type = client.post("/user/", json={"name": 42, "email": [], "password": None})
    assert wrong_type.status_code == 422

    typo_in_email = {"name": "Ann", "email": "ann@example.c", "password": PASSWORD}
    typo = client.post("/user/", json=typo_in_email)
    assert typo.status_code == 422
    assert typo.json()["detail"] == (
        "body.email: the email's domain must end in a top-level domain such as .com or .de"
    )

    # PostgreSQL cannot store a NUL character: refused as input, never a 500.
    nul = client.post(
        "/user/", json={"name": "Ada\x00", "email": "a\x00@example.com", "password": PASSWORD}
    )
    assert nul.status_code == 422
    assert "body.name: must not contain NUL characters" in nul.json()["detail"]
    assert "body.email" in nul.json()["detail"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("\u200b\u200b\u200b", "must have at least 2 visible characters"),  # zero-width spaces
        ("A\u2060\u2060", "must have at least 2 visible characters"),
        ("Eve\u202egnp.exe", "must not contain control characters or text-direction overrides"),
        ("Eve\u2067x", "must not contain control characters or text-direction overrides"),
        ("Eve\x07", "must not contain control characters or text-direction overrides"),
    ],
)
def test_a_name_that_shows_as_nothing_or_turns_text_around_is_refused(
    client: TestClient, name: str, reason: str
) -> None:
    answer = client.post(
        "/user/", json={"name": name, "email": "e@example.com", "password": PASSWORD}
    )
    assert (answer.status_code, answer.json()) == (
        422,
        {"detail": f"body.name: {reason}"},
    )


def test_names_in_any_script_are_accepted(client: TestClient) -> None:
    # Persian writes a zero-width non-joiner between some letters; emoji join with ZWJ.
    for index, name in enumerate(
        ["Zoë", "李明", "Mehr\u200cnaz", "\U0001f468\u200d\U0001f469 Lee"]
    ):
        body = {"name": name, "email": f"n{index}@example.com", "password": PASSWORD}
        answer = client.post("/user/", json=body)
        assert (answer.status_code, answer.json()["name"]) == (201, name)


def test_unknown_fields_are_refused_and_is_admin_cannot_be_set(
    client: TestClient, app: FastAPI
) -> None:
    body = {"name": "Mallory", "email": "m@example.com", "password": PASSWORD, "is_admin": True}
    answer = client.post("/user/", json=body)
    assert answer.status_code == 422
    assert answer.json() == {"detail": "body.is_admin: Extra inputs are not permitted"}
    with app_state(app).database.transaction() as session:
        assert session.scalar(select(User).where(User.email == "m@example.com")) is None

    created = client.post("/user/", json={k: v for k, v in body.items() if k != "is_admin"})
    assert created.status_code == 201
    with app_state(app).database.transaction() as session:
        assert session.get(User, created.json()["id"]).is_admin is False  # type: ignore[union-attr]


def test_a_user_reads_and_deletes_only_themselves(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(name="Alice"), make_user(name="Bob")

    mine = client.get(f"/user/{alice.id}", headers=alice.headers)
    assert mine.json() == {"id": alice.id, "name": "Alice", "email": alice.email}

    for method in ("GET", "DELETE"):
        answer = client.request(method, f"/user/{bob.id}", headers=alice.headers)
        assert answer.status_code == 403
        assert answer.json() == {"detail": "You may only act on your own user"}
    assert client.get("/user/me", headers=bob.headers).status_code == 200


def test_only_admins_list_users(
    client: TestClient, make_user: Callable[..., Caller], admin: Caller
) -> None:
    alice = make_user(name="Alice")
    assert client.get("/user/").status_code == 401
    refused = client.get("/user/", headers=alice.headers)
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Only administrators may do this"}

    listed = client.get("/user/", headers=admin.headers)
    assert listed.status_code == 200
    assert [u["email"] for u in listed.json()] == [admin.email, alice.email]
    assert set(listed.json()[0]) == {"id", "name", "email"}


def test_user_list_is_paginated(
    client: TestClient, make_user: Callable[..., Caller], admin: Caller
) -> None:
    users = [make_user() for _ in range(3)]
    ids = [admin.id] + [u.id for u in users]

    def page(query: str) -> list[int]:
        answer = client.get(f"/user/?{query}", headers=admin.headers)
        assert answer.status_code == 200
        return [u["id"] for u in answer.json()]

    assert page("limit=2") == ids[:2]
    assert page("limit=2&offset=2") == ids[2:]
    assert page("offset=10") == []
    for bad in ("limit=0", "limit=101", "offset=-1", "limit=ten", f"offset={2**31}"):
        answer = client.get(f"/user/?{bad}", headers=admin.headers)
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("query.")


def test_an_admin_reads_and_deletes_anyone(
    client: TestClient, make_user: Callable[..., Caller], admin: Caller
) -> None:
    bob = make_user(name="Bob")
    assert client.get(f"/user/{bob.id}", headers=admin.headers).json()["name"] == "Bob"
    assert client.delete(f"/user/{bob.id}", headers=admin.headers).status_code == 204
    gone = client.get(f"/user/{bob.id}", headers=admin.headers)
    assert gone.status_code == 404
    assert gone.json() == {"detail": f"User with the id {bob.id} is not available"}


def test_unknown_or_impossible_user_ids(client: TestClient, admin: Caller) -> None:
    for method in ("GET", "DELETE"):
        answer = client.request(method, "/user/999999", headers=admin.headers)
        assert answer.status_code == 404
        assert answer.json() == {"detail": "User with the id 999999 is not available"}
    for bad in ("0", "-1", str(2**31), str(10**30), "abc"):
        assert client.get(f"/user/{bad}", headers=admin.headers).status_code == 422


def test_deleting_yourself_takes_your_predictions_and_feedback_along(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    with app_state(app).database.transaction() as session:
        for owner in (alice, bob):
            prediction = Prediction(
                user_id=owner.id,
                image_file_name="0a1b2c.jpg",
                label="Eskimo_dog",
                score=0.62,
                top_k=[{"label": "Eskimo_dog", "score": 0.62}],
                model_id="efficientnet-lite0",
                latency_ms=12.5,
            )
            session.add(prediction)
            session.flush()
            session.add(Feedback(user_id=owner.id, prediction_id=prediction.id, **FEEDBACK))

    assert client.delete(f"/user/{alice.id}", headers=alice.headers).status_code == 204
    assert client.get("/user/me", headers=alice.headers).status_code == 401

    with app_state(app).database.transaction() as session:
        for table in (Feedback, Prediction):
            owners = session.scalars(select(table.user_id)).all()
            assert owners == [bob.id]
        assert session.scalar(select(func.count()).select_from(User)) == 2  # bob and the admin


def test_no_answer_carries_a_password_hash(
    client: TestClient, make_user: Callable[..., Caller], admin: Caller
) -> None:
    created = client.post(
        "/user/", json={"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    )
    alice = make_user()
    answers = [
        created,
        client.post("/login", data={"username": "ada@example.com", "password": PASSWORD}),
        client.get("/user/me", headers=alice.headers),
        client.get(f"/user/{alice.id}", headers=alice.headers),
        client.get("/user/", headers=admin.headers),
        client.get(f"/user/{alice.id}", headers=admin.headers),
        client.get("/openapi.json"),
    ]
    for answer in answers:
        assert answer.status_code in {200, 201}
        assert "argon2" not in answer.text
        assert "hashed_password" not in answer.text
        assert PASSWORD not in answer.text
