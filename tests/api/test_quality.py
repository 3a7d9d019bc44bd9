"""GET /models/quality and ``imgclf models quality``: known feedback given through the API
comes back as known counts, shares and Wilson intervals (computed here independently)."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import NormalDist

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from imgclf.api.state import app_state
from imgclf.cli import app as cli
from imgclf.db.models import Feedback, Prediction
from imgclf.settings import Settings, get_settings

from .conftest import Caller

OUT_OF_RANGE = "the window must lie within the years 1 to 9999"

NOW = datetime.now(UTC)
PICTURES = itertools.count()
OLD = NOW - timedelta(days=40)


@pytest.fixture
def settings(database_url: str, model_dir: Path) -> Settings:
    return Settings(database_url=database_url, model_dir=model_dir)


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval in its other textbook form, z from the normal quantile."""
    z = NormalDist().inv_cdf(0.975)
    spread = z * math.sqrt(z * z + 4 * k * (n - k) / n)
    return (2 * k + z * z - spread) / (2 * (n + z * z)), (2 * k + z * z + spread) / (
        2 * (n + z * z)
    )


def predict(
    app: FastAPI,
    owner: Caller,
    model: str,
    label: str,
    at: datetime = NOW,
    image: str | None = None,
) -> int:
    """A prediction of ``image`` (by default a picture of its own)."""
    with app_state(app).database.transaction() as session:
        prediction = Prediction(
            user_id=owner.id,
            image_file_name=image or f"{next(PICTURES):032x}.jpg",
            label=label,
            score=0.5,
            top_k=[{"label": label, "score": 0.5}],
            model_id=model,
            latency_ms=5.0,
            created_at=at,
        )
        session.add(prediction)
        session.flush()
        return prediction.id


def say(client: TestClient, owner: Caller, prediction_id: int, **verdict: object) -> None:
    answer = client.post(
        "/feedback/", json={"prediction_id": prediction_id, **verdict}, headers=owner.headers
    )
    assert answer.status_code == 201, answer.text


@pytest.fixture
def known_feedback(client: TestClient, app: FastAPI, make_user: Callable[..., Caller]) -> None:
    """m@1, last 30 days: 20 predictions, 11 right, 6 wrong (Eskimo_dog 4 times: malamute 3,
    not said 1; tabby 2: tiger_cat), 3 unmarked (one with words only). 4 older ones, right.
    m@2: 8 predictions, 6 right, 2 wrong. One feedback from before feedback had to name a
    prediction, linked to none; one that names no prediction now is refused."""
    alice, bob = make_user(), make_user()
    for n in range(11):
        owner = alice if n % 2 else bob
        prediction_id = predict(app, owner, "m@1", "Eskimo_dog")
        if n == 0:  # first said wrong, then changed: counts once, as right
            say(client, owner, prediction_id, correct=False, correct_class="malamute")
        say(client, owner, prediction_id, correct=True)
    for _ in range(3):
        say(client, alice, predict(app, alice, "m@1", "Eskimo_dog"), correct_class="malamute")
    say(client, bob, predict(app, bob, "m@1", "Eskimo_dog"), correct=False)
    for _ in range(2):
        say(client, bob, predict(app, bob, "m@1", "tabby"), correct_class="n02123159")
    predict(app, alice, "m@1", "Eskimo_dog")
    predict(app, alice, "m@1", "Eskimo_dog")
    say(client, alice, predict(app, alice, "m@1", "tabby"), feedback="cute")
    for _ in range(4):
        say(client, alice, predict(app, alice, "m@1", "Eskimo_dog", at=OLD), correct=True)
    for n in range(8):
        say(client, bob, predict(app, bob, "m@2", "Eskimo_dog"), correct=n < 6)
    seed_style = {"feedback": "?", "score": 0.1, "predicted_class": "x", "image_file_name": "z.png"}
    assert client.post("/feedback", json=seed_style, headers=alice.headers).status_code == 404
    with app_state(app).database.transaction() as session:
        session.add(
            Feedback(
                user_id=alice.id,
                score=0.1,
                predicted_class="x",
                image_file_name="z.png",
                feedback="?",
            )
        )


def check_shares(figures: dict[str, object], right: int, wrong: int, predictions: int) -> None:
    unmarked = predictions - right - wrong
    assert (figures["predictions"], figures["right"], figures["wrong"], figures["unmarked"]) == (
        predictions,
        right,
        wrong,
        unmarked,
    )
    for key, interval_key, count, whole in (
        ("right_share", "interval", right, predictions),
        ("wrong_share", "wrong_interval", wrong, predictions),
        ("unmarked_share", "unmarked_interval", unmarked, predictions),
        ("right_when_marked", "right_when_marked_interval", right, right + wrong),
    ):
        assert figures[key] == pytest.approx(count / whole, abs=1e-4), key
        assert figures[interval_key] == pytest.approx(list(wilson(count, whole)), abs=1e-4), key


@pytest.mark.usefixtures("known_feedback")
def test_quality_per_model_version_matches_the_feedback_given(
    client: TestClient, admin: Caller
) -> None:
    answer = client.get("/models/quality?days=30", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert [m["model"] for m in report["models"]] == ["m@1", "m@2"]
    first, second = report["models"]
    check_shares(first, right=11, wrong=6, predictions=20)
    check_shares(second, right=6, wrong=2, predictions=8)
    assert (first["judges"], second["judges"]) == (2, 1)
    assert first["most_corrected"] == [
        {
            "predicted_class": "Eskimo_dog",
            "wrong": 4,
            "corrected_to": [
                {"correct_class": "malamute", "count": 3},
                {"correct_class": None, "count": 1},
            ],
        },
        {
            "predicted_class": "tabby",
            "wrong": 2,
            "corrected_to": [{"correct_class": "tiger_cat", "count": 2}],
        },
    ]
    assert second["most_corrected"] == [
        {
            "predicted_class": "Eskimo_dog",
            "wrong": 2,
            "corrected_to": [{"correct_class": None, "count": 2}],
        }
    ]
    assert report["unlinked_feedback"] == 1

    everything = client.get("/models/quality", headers=admin.headers).json()
    check_shares(everything["models"][0], right=15, wrong=6, predictions=24)
    assert everything["since"] is None
    before = client.get(
        "/models/quality",
        params={"until": (NOW - timedelta(days=1)).isoformat()},
        headers=admin.headers,
    ).json()
    check_shares(before["models"][0], right=4, wrong=0, predictions=4)
    assert [m["model"] for m in before["models"]] == ["m@1"]


def test_one_users_repeats_of_a_picture_count_once_with_their_newest_verdict(
    client: TestClient, app: FastAPI, admin: Caller, make_user: Callable[..., Caller]
) -> None:
    """An honest user marks 5 answers right; another sends one picture 300 times (repeats cost
    no quota and come from the cache) and marks every answer wrong: one judgement, not 300."""
    honest, mallory = make_user(), make_user()
    for _ in range(5):
        say(client, honest, predict(app, honest, "m@1", "Eskimo_dog"), correct=True)
    repeats = [predict(app, mallory, "m@1", "Eskimo_dog", image="dog.jpg") for _ in range(300)]
    for prediction_id in repeats:
        say(client, mallory, prediction_id, correct_class="tabby")
    # Her newest verdict on it is the one that counts; her other pictures count on their own.
    say(client, mallory, repeats[7], correct=True)
    say(client, mallory, predict(app, mallory, "m@1", "Eskimo_dog"), correct=False)
    predict(app, mallory, "m@1", "Eskimo_dog", image="dog.jpg")  # once more, not marked
    # The same picture answered by another version is judged apart.
    say(client, mallory, predict(app, mallory, "m@2", "Eskimo_dog", image="dog.jpg"), correct=True)

    models = client.get("/models/quality", headers=admin.headers).json()["models"]
    first, second = models
    check_shares(first, right=6, wrong=1, predictions=7)
    assert first["judges"] == 2
    assert first["most_corrected"] == [
        {
            "predicted_class": "Eskimo_dog",
            "wrong": 1,
            "corrected_to": [{"correct_class": None, "count": 1}],
        }
    ]
    check_shares(second, right=1, wrong=0, predictions=1)


@pytest.mark.usefixtures("known_feedback")
def test_the_cli_reads_the_same_figures_from_the_database(
    client: TestClient, admin: Caller, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGCLF_DATABASE_URL", database_url)
    get_settings.cache_clear()
    since = (NOW - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S")
    printed = CliRunner().invoke(cli, ["models", "quality", "--json", "--since", since])
    assert printed.exit_code == 0, printed.output
    route = client.get("/models/quality", params={"since": since}, headers=admin.headers).json()
    assert json.loads(printed.output) == route

    table = CliRunner().invoke(cli, ["models", "quality", "--days", "30"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "m@1" in table.output
    assert "55.0% (34.2%-74.2%)" in table.output
    assert "Eskimo_dog (4) -> malamute 3, ? 1" in table.output


def test_only_admins_read_quality(client: TestClient, make_user: Callable[..., Caller]) -> None:
    alice = make_user()
    refused = client.get("/models/quality", headers=alice.headers)
    assert (refused.status_code, refused.json()) == (
        403,
        {"detail": "Only administrators may do this"},
    )
    assert client.get("/models/quality").status_code == 401


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("days=7&since=2026-01-01", "give since or days, not both"),
        ("since=2026-02-01&until=2026-01-01", "since must be before until"),
        ("days=0", "query.days: Input should be greater than or equal to 1"),
        ("since=yesterday", "query.since: Input should be a valid datetime"),
        ("until=0001-01-05T00:00:00Z&days=10", OUT_OF_RANGE),
        ("until=9999-12-31T23:59:59-05:00", OUT_OF_RANGE),
        ("since=0001-01-01T00:00:00%2B05:00", OUT_OF_RANGE),
    ],
)
def test_a_bad_window_is_422(client: TestClient, admin: Caller, query: str, reason: str) -> None:
    answer = client.get(f"/models/quality?{query}", headers=admin.headers)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(reason), answer.json()
