"""Feedback with a verdict: right or wrong and the right class, one per prediction, checked
against the model's own labels; the seed's clients' feedback is linked by image and user."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from imgclf.api.feedback.classes import find_class_list
from imgclf.api.state import app_state
from imgclf.db.models import Feedback, Prediction
from imgclf.settings import Settings
from imgclf.ui.feedback_form import feedback_text

from .conftest import Caller

MODEL = "efficientnet-lite0@322e3819dab0"


@pytest.fixture
def settings(database_url: str, model_dir: Path) -> Settings:
    """The real bundle's labels.json is what corrected classes are checked against."""
    return Settings(database_url=database_url, model_dir=model_dir)


def add_prediction(
    app: FastAPI, user_id: int, image: str = "0a1b2c.jpg", label: str = "Eskimo_dog"
) -> int:
    with app_state(app).database.transaction() as session:
        prediction = Prediction(
            user_id=user_id,
            image_file_name=image,
            label=label,
            score=0.6222,
            top_k=[{"label": label, "score": 0.6222}],
            model_id=MODEL,
            latency_ms=10.0,
        )
        session.add(prediction)
        session.flush()
        return prediction.id


def stored(
    app: FastAPI, user_id: int
) -> list[tuple[int | None, bool | None, str | None, str | None]]:
    with app_state(app).database.transaction() as session:
        rows = session.scalars(
            select(Feedback).where(Feedback.user_id == user_id).order_by(Feedback.id)
        )
        return [(f.prediction_id, f.correct, f.correct_class, f.correct_wnid) for f in rows]


def test_a_verdict_names_only_the_prediction(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    prediction_id = add_prediction(app, alice.id)
    answer = client.post(
        "/feedback/", json={"prediction_id": prediction_id, "correct": True}, headers=alice.headers
    )
    assert answer.status_code == 201, answer.text
    assert answer.json() == {
        "id": answer.json()["id"],
        "prediction_id": prediction_id,
        "score": 0.6222,
        "predicted_class": "Eskimo_dog",
        "image_file_name": "0a1b2c.jpg",
        "feedback": "",
        "correct": True,
        "correct_class": None,
    }


def test_a_second_feedback_replaces_the_first(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    prediction_id = add_prediction(app, alice.id)
    first = client.post(
        "/feedback/", json={"prediction_id": prediction_id, "correct": True}, headers=alice.headers
    ).json()
    second = client.post(
        "/feedback/",
        json={"prediction_id": prediction_id, "correct": False, "correct_class": "malamute"},
        headers=alice.headers,
    )
    assert second.status_code == 201
    assert second.json()["id"] == first["id"]
    assert (second.json()["correct"], second.json()["correct_class"]) == (False, "malamute")
    assert stored(app, alice.id) == [(prediction_id, False, "malamute", "n02110063")]
    listed = client.get("/feedback/", headers=alice.headers).json()
    assert [item["id"] for item in listed] == [first["id"]]


@pytest.mark.parametrize(
    ("given", "name", "wnid"),
    [
        ("Siberian_husky", "Siberian_husky", "n02110185"),
        ("siberian husky", "Siberian_husky", "n02110185"),
        ("n02110185", "Siberian_husky", "n02110185"),
        ("crane", "crane", None),  # two ImageNet classes share this name
        ("n03126707", "crane", "n03126707"),
    ],
)
def test_the_right_class_is_a_label_name_or_a_wordnet_id(
    client: TestClient,
    app: FastAPI,
    make_user: Callable[..., Caller],
    given: str,
    name: str,
    wnid: str | None,
) -> None:
    alice = make_user()
    prediction_id = add_prediction(app, alice.id)
    answer = client.post(
        "/feedback/",
        json={"prediction_id": prediction_id, "correct_class": given},
        headers=alice.headers,
    )
    assert answer.status_code == 201, answer.text
    assert stored(app, alice.id) == [(prediction_id, False, name, wnid)]


def test_naming_the_predicted_class_is_a_right_verdict(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    prediction_id = add_prediction(app, alice.id)
    body = {"prediction_id": prediction_id, "correct_class": "n02109961"}
    assert client.post("/feedback/", json=body, headers=alice.headers).status_code == 201
    assert stored(app, alice.id) == [(prediction_id, True, None, None)]


REFUSED = [
    (
        {"correct_class": "malamut"},
        f"correct_class 'malamut' is not one of the 1000 classes of {MODEL}; did you mean malamute",
    ),
    ({"correct_class": "n99999999"}, "correct_class 'n99999999' is not one of the 1000"),
    (
        {"correct": True, "correct_class": "malamute"},
        "correct is true but correct_class names malamute, not the predicted Eskimo_dog",
    ),
    (
        {"correct": False, "correct_class": "Eskimo_dog"},
        "correct is false but correct_class is the predicted class Eskimo_dog",
    ),
    ({"correct": "maybe"}, "body.correct: Input should be a valid boolean"),
]


def test_a_class_the_model_does_not_know_or_a_contradiction_is_422(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    prediction_id = add_prediction(app, alice.id)
    for change, reason in REFUSED:
        answer = client.post(
            "/feedback/", json={"prediction_id": prediction_id, **change}, headers=alice.headers
        )
        assert answer.status_code == 422, change
        assert answer.json()["detail"].startswith(reason), answer.json()
    assert stored(app, alice.id) == []


def test_without_a_prediction_id_the_seeds_fields_are_required(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    answer = client.post(
        "/feedback/", json={"feedback": "nice", "score": 0.5}, headers=alice.headers
    )
    assert answer.status_code == 422
    assert answer.json() == {
        "detail": "body: without a prediction_id, predicted_class and image_file_name required"
    }


def test_another_users_prediction_is_404_and_left_alone(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    theirs = add_prediction(app, bob.id)
    client.post("/feedback/", json={"prediction_id": theirs, "correct": True}, headers=bob.headers)
    refused = client.post(
        "/feedback/", json={"prediction_id": theirs, "correct": False}, headers=alice.headers
    )
    assert (refused.status_code, refused.json()) == (
        404,
        {"detail": f"Prediction {theirs} not found"},
    )
    assert stored(app, bob.id) == [(theirs, True, None, None)]
    assert stored(app, alice.id) == []


def test_seed_style_feedback_is_linked_to_the_authors_newest_prediction_of_that_image(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    add_prediction(app, alice.id, image="older.jpg")
    newest = add_prediction(app, alice.id, image="older.jpg")
    add_prediction(app, bob.id, image="bobs.jpg")
    seed = {"feedback": "wrong", "score": 0.62, "predicted_class": "Eskimo_dog"}

    for text in ("it is a husky", "it is a malamute"):
        posted = client.post(
            "/feedback",
            json={**seed, "feedback": text, "image_file_name": "older.jpg"},
            headers=alice.headers,
        )
        assert posted.status_code == 201
        assert posted.json()["prediction_id"] == newest
    # Bob's image is not Alice's: refused, nothing stored.
    refused = client.post(
        "/feedback", json={**seed, "image_file_name": "bobs.jpg"}, headers=alice.headers
    )
    assert refused.status_code == 404
    assert stored(app, alice.id) == [(newest, None, None, None)]
    texts = [item["feedback"] for item in client.get("/feedback", headers=alice.headers).json()]
    assert texts == ["it is a malamute"]


def test_verdicts_sent_at_once_leave_one_feedback(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    """Two clients (the UI in two tabs) answer for the same prediction at the same moment."""
    alice = make_user()
    prediction_id = add_prediction(app, alice.id)
    bodies = [
        {"prediction_id": prediction_id, "correct": n % 2 == 0, "feedback": f"try {n}"}
        for n in range(16)
    ]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda body: client.post("/feedback/", json=body, headers=alice.headers), bodies
            )
        )
    assert [answer.status_code for answer in answers] == [201] * len(bodies)
    assert len({answer.json()["id"] for answer in answers}) == 1
    rows = stored(app, alice.id)
    assert len(rows) == 1
    assert rows[0][0] == prediction_id


@pytest.mark.parametrize(
    ("correct", "right_class", "verdict"),
    [
        (True, None, (True, None, None)),
        (False, "Siberian husky", (False, "Siberian_husky", "n02110185")),
        (False, "Eskimo_dog", (True, None, None)),
        (False, "the neighbour's dog", (False, None, None)),  # own words stay words
        (False, None, (False, None, None)),
    ],
)
def test_the_uis_worded_verdict_counts_as_one(
    client: TestClient,
    app: FastAPI,
    make_user: Callable[..., Caller],
    correct: bool,
    right_class: str | None,
    verdict: tuple[bool | None, str | None, str | None],
) -> None:
    """The UI sends its verdict in words (``feedback_text``); it is read, never refused."""
    alice = make_user()
    prediction_id = add_prediction(app, alice.id)
    words = feedback_text(correct, right_class, "fluffy")
    answer = client.post(
        "/feedback", json={"prediction_id": prediction_id, "feedback": words}, headers=alice.headers
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["feedback"] == words
    assert stored(app, alice.id) == [(prediction_id, *verdict)]


def test_classes_are_read_from_a_model_repository_outside_the_data_folder(
    model_repository: Path, tmp_path: Path
) -> None:
    """As ``imgclf up`` with IMGCLF_MODEL_REPOSITORY elsewhere runs it: the right class a user
    names is found in that repository's bundles (it was dropped to words before)."""
    settings = Settings(data_dir=tmp_path / "data", model_repository=model_repository)
    classes = find_class_list(settings, "efficientnet-lite0@2")
    assert classes is not None
    assert classes.resolve("lynx").wnid == "n02127052"
