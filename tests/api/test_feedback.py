"""/feedback/: created by its author, read by them (and admins), linked to their predictions."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from imgclf.api.feedback.schemas import FeedbackCreate
from imgclf.api.feedback.service import give_feedback
from imgclf.api.state import app_state
from imgclf.api.users.service import AccountGoneError, delete_user
from imgclf.db.models import Prediction, User

from .conftest import Caller
from .lock_order import meet

FEEDBACK = {
    "feedback": "Right breed, wrong colour",
    "score": 0.6222,
    "predicted_class": "Eskimo_dog",
    "image_file_name": "0a1b2c.jpg",
}
ROUNDS = 6
POSTERS = 6


def add_prediction(app: FastAPI, user_id: int, image_file_name: str = "0a1b2c.jpg") -> int:
    with app_state(app).database.transaction() as session:
        prediction = Prediction(
            user_id=user_id,
            image_file_name=image_file_name,
            label="Eskimo_dog",
            score=0.6222,
            top_k=[{"label": "Eskimo_dog", "score": 0.6222}],
            model_id="efficientnet-lite0",
            latency_ms=10.0,
        )
        session.add(prediction)
        session.flush()
        return prediction.id


def test_feedback_is_created_at_both_paths_without_a_redirect(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    """The seed's clients name the prediction by its image: the newest of the user's."""
    alice = make_user()
    add_prediction(app, alice.id)
    newest = add_prediction(app, alice.id)
    for path in ("/feedback/", "/feedback"):
        answer = client.post(path, json=FEEDBACK, headers=alice.headers, follow_redirects=False)
        assert answer.status_code == 201, path
        assert answer.json() == {
            **FEEDBACK,
            "id": answer.json()["id"],
            "prediction_id": newest,
            "correct": None,
            "correct_class": None,
        }
    # The second replaced the first: a prediction has one current feedback.
    assert len(client.get("/feedback/", headers=alice.headers).json()) == 1


def test_feedback_on_an_image_you_were_never_answered_is_404_and_stores_nothing(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    """Every feedback row belongs to a prediction, so the history's retention bounds them."""
    alice, bob = make_user(), make_user()
    add_prediction(app, bob.id)  # someone else's prediction of that image does not count

    refused = client.post("/feedback/", json=FEEDBACK, headers=alice.headers)

    assert refused.status_code == 404
    assert refused.json() == {
        "detail": "None of your predictions is of the image '0a1b2c.jpg': send the "
        "image_file_name or the prediction_id that a prediction's answer gave"
    }
    assert client.get("/feedback/", headers=alice.headers).json() == []


def test_both_spellings_of_the_list_answer_like_the_seeds_clients_expect(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    add_prediction(app, alice.id)
    client.post("/feedback", json=FEEDBACK, headers=alice.headers)
    lists = [
        client.get(path, headers=alice.headers, follow_redirects=False)
        for path in ("/feedback/", "/feedback")
    ]
    assert [answer.status_code for answer in lists] == [200, 200]
    assert lists[0].json() == lists[1].json() != []


def test_feedback_needs_a_token(client: TestClient) -> None:
    for path in ("/feedback/", "/feedback"):
        answer = client.post(path, json=FEEDBACK)
        assert (answer.status_code, answer.json()) == (401, {"detail": "Not authenticated"})
    assert client.get("/feedback/").status_code == 401


def test_feedback_links_only_your_own_prediction(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    mine, theirs = add_prediction(app, alice.id), add_prediction(app, bob.id)

    linked = client.post(
        "/feedback/", json={**FEEDBACK, "prediction_id": mine}, headers=alice.headers
    )
    assert linked.status_code == 201
    assert linked.json()["prediction_id"] == mine

    for prediction_id in (theirs, 424242):
        refused = client.post(
            "/feedback/", json={**FEEDBACK, "prediction_id": prediction_id}, headers=alice.headers
        )
        assert refused.status_code == 404
        assert refused.json() == {"detail": f"Prediction {prediction_id} not found"}
    assert len(client.get("/feedback/", headers=alice.headers).json()) == 1


def test_feedback_on_a_prediction_keeps_the_predictions_own_answer(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    """What a client says the prediction was is not stored over what it was: the feedback
    read back, and everyone who reads it, see the prediction's class, score and image."""
    alice = make_user()
    body = {
        **FEEDBACK,
        "prediction_id": add_prediction(app, alice.id),
        "score": 0.01,
        "predicted_class": "tabby",
        "image_file_name": "../../../etc/passwd",
        "correct": False,
    }
    created = client.post("/feedback/", json=body, headers=alice.headers)
    assert created.status_code == 201, created.text
    stored = client.get(f"/feedback/{created.json()['id']}", headers=alice.headers).json()
    for answer in (created.json(), stored):
        assert (answer["predicted_class"], answer["score"], answer["image_file_name"]) == (
            "Eskimo_dog",
            0.6222,
            "0a1b2c.jpg",
        )


INVALID_FEEDBACK = [
    ({"score": 1.5}, "body.score: Input should be less than or equal to 1"),
    ({"score": -0.1}, "body.score: Input should be greater than or equal to 0"),
    ({"score": "high"}, "body.score: Input should be a valid number"),
    ({"feedback": "x" * 2001}, "body.feedback: String should have at most 2000 characters"),
    ({"predicted_class": ""}, "body.predicted_class: String should have at least 1 character"),
    ({"user_id": 1}, "body.user_id: Extra inputs are not permitted"),
    ({"feedback": "nul \x00 byte"}, "body.feedback: must not contain NUL characters"),
    ({"image_file_name": "a\x00.jpg"}, "body.image_file_name: must not contain NUL characters"),
    ({"prediction_id": 2**40}, "body.prediction_id: Input should be less than or equal to"),
    # A verdict is true or false, not words or numbers that pass for one.
    ({"correct": "yes"}, "body.correct: Input should be a valid boolean"),
    ({"correct": 0}, "body.correct: Input should be a valid boolean"),
]


def test_invalid_feedback_is_422_naming_the_field(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    for change, reason in INVALID_FEEDBACK:
        answer = client.post("/feedback/", json={**FEEDBACK, **change}, headers=alice.headers)
        assert answer.status_code == 422, change
        assert answer.json()["detail"].startswith(reason), answer.json()
    assert client.get("/feedback/", headers=alice.headers).json() == []


def test_feedback_list_is_your_own_newest_first_and_paginated(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    created = []
    for n in range(3):
        body = {**FEEDBACK, "prediction_id": add_prediction(app, alice.id), "feedback": f"n{n}"}
        created.append(client.post("/feedback/", json=body, headers=alice.headers).json())
    add_prediction(app, bob.id)
    client.post("/feedback/", json=FEEDBACK, headers=bob.headers)

    newest_first = [f["id"] for f in reversed(created)]
    assert [f["id"] for f in client.get("/feedback/", headers=alice.headers).json()] == newest_first
    page = client.get("/feedback/?limit=2&offset=1", headers=alice.headers).json()
    assert [f["id"] for f in page] == newest_first[1:]
    assert len(client.get("/feedback/", headers=bob.headers).json()) == 1
    assert client.get("/feedback/?limit=101", headers=alice.headers).status_code == 422


def test_one_feedback_is_read_by_its_author_or_an_admin(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller], admin: Caller
) -> None:
    alice, bob = make_user(), make_user()
    add_prediction(app, alice.id)
    created = client.post("/feedback/", json=FEEDBACK, headers=alice.headers).json()
    path = f"/feedback/{created['id']}"

    assert client.get(path, headers=alice.headers).json() == created
    assert client.get(path, headers=admin.headers).json() == created
    refused = client.get(path, headers=bob.headers)
    assert refused.status_code == 403
    assert refused.json() == {"detail": "You may only read your own feedback"}
    missing = client.get("/feedback/999999", headers=admin.headers)
    assert (missing.status_code, missing.json()) == (404, {"detail": "Feedback 999999 not found"})


def test_deleting_a_user_removes_their_feedback(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller], admin: Caller
) -> None:
    alice = make_user()
    add_prediction(app, alice.id)
    created = client.post("/feedback/", json=FEEDBACK, headers=alice.headers).json()
    assert client.delete(f"/user/{alice.id}", headers=admin.headers).status_code == 204
    assert client.get(f"/feedback/{created['id']}", headers=admin.headers).status_code == 404


def race_a_deletion(client: TestClient, alice: Caller, body: dict[str, object]) -> list[Response]:
    """POSTERS threads post feedback (half of them naming a prediction) until just after
    ``alice`` deletes herself; every answer is returned."""
    answers: list[Response] = []
    deleted = threading.Event()

    def post(index: int) -> None:
        while True:
            last = deleted.is_set()
            feedback = body if index % 2 else FEEDBACK
            answers.append(client.post("/feedback/", json=feedback, headers=alice.headers))
            if last:
                return

    def delete() -> None:
        time.sleep(0.02)
        client.delete(f"/user/{alice.id}", headers=alice.headers)
        deleted.set()

    with ThreadPoolExecutor(POSTERS + 1) as pool:
        runs = [pool.submit(post, index) for index in range(POSTERS)]
        runs.append(pool.submit(delete))
        for run in runs:
            run.result()
    return answers


def test_feedback_racing_its_authors_deletion_is_401_or_404_never_500(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    """The author deletes their account while posting feedback: the rows the feedback names
    vanish between the token check and the insert."""
    answers: list[Response] = []
    for _ in range(ROUNDS):
        alice = make_user()
        body = {**FEEDBACK, "prediction_id": add_prediction(app, alice.id)}
        answers += race_a_deletion(client, alice, body)
    statuses = Counter(answer.status_code for answer in answers)
    assert set(statuses) <= {201, 401, 404}, statuses
    assert statuses[401] >= ROUNDS * POSTERS  # every poster's last try came after the delete
    for answer in answers:
        if answer.status_code != 201:
            detail = answer.json()["detail"]
            assert detail == "Could not validate credentials" or re.fullmatch(
                r"Prediction \d+ not found", detail
            ), detail


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_feedback_waits_behind_its_authors_deletion_without_a_deadlock(
    app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    """PostgreSQL: an account's deletion holds its row (FOR UPDATE) when feedback on one of its
    predictions begins. The feedback waits for the author's row before it touches the
    prediction's, which the deletion's cascade needs: taken the other way round, the two
    waited for each other and PostgreSQL failed one of them (503 "The database is
    unavailable", the feedback lost)."""
    alice = make_user()
    prediction_id = add_prediction(app, alice.id)
    body = FeedbackCreate.model_validate({**FEEDBACK, "prediction_id": prediction_id})
    upload_dir = app_state(app).settings.upload_dir

    def delete(session: Session) -> None:
        delete_user(session, session.get_one(User, alice.id), upload_dir)

    def give(session: Session) -> object:
        return give_feedback(
            session, user_id=alice.id, data=body, classes_of=lambda _: None, byte_limit=2**20
        )

    deletion, feedback = meet(app_state(app).database, delete, "FOR UPDATE", give)
    assert deletion.exception() is None
    assert isinstance(feedback.exception(), AccountGoneError)
