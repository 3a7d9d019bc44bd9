"""GET /history (pages with a total, latest feedback, original names) and the owner-only
GET /model/predictions/{id}/image, on the real model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from imgclf.api.deps import AuthenticatedUser, UnitsOfWork
from imgclf.api.history.router import read_prediction_image
from imgclf.api.state import app_state
from imgclf.serving import create_service_app
from imgclf.settings import Settings
from tests.api.conftest import Caller
from tests.support import DOG_JPEG, dog_upload


@pytest.fixture
def settings(database_url: str, model_dir: Path, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url, model_dir=model_dir, model_threads=1, data_dir=tmp_path
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_service_app(settings)


def predict(client: TestClient, caller: Caller, name: str) -> int:
    answer = client.post("/model/predict", files=dog_upload(name), headers=caller.headers)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["prediction_id"])


def test_history_pages_have_a_total_names_and_the_latest_feedback(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    ids = [predict(client, alice, f"C:\\photos\\dog {n}.jpeg") for n in range(3)]
    predict(client, bob, "bobs.jpeg")
    for said in ("Correct.", "Wrong. Right class: Siberian_husky."):
        feedback = {
            "feedback": said,
            "score": 0.6222,
            "predicted_class": "Eskimo_dog",
            "image_file_name": "x.jpeg",
            "prediction_id": ids[0],
        }
        assert client.post("/feedback", json=feedback, headers=alice.headers).status_code == 201

    first = client.get("/history?limit=2", headers=alice.headers).json()
    assert first["total"] == 3
    assert [item["id"] for item in first["items"]] == [ids[2], ids[1]]
    assert first["items"][0]["original_name"] == "dog 2.jpeg"  # the name, never the path
    assert first["items"][0]["feedback"] is None
    last = client.get("/history?limit=2&offset=2", headers=alice.headers).json()
    assert [item["id"] for item in last["items"]] == [ids[0]]
    assert last["items"][0]["feedback"]["feedback"] == "Wrong. Right class: Siberian_husky."
    assert client.get("/history", headers=bob.headers).json()["total"] == 1
    assert client.get("/history").status_code == 401


def test_a_predictions_image_is_served_to_its_owner_only(
    client: TestClient, make_user: Callable[..., Caller], admin: Caller
) -> None:
    alice, bob = make_user(), make_user()
    prediction_id = predict(client, alice, "dog.jpeg")
    mine = client.get(f"/model/predictions/{prediction_id}/image", headers=alice.headers)
    assert mine.status_code == 200
    assert mine.headers["content-type"] == "image/jpeg"
    assert mine.headers["cache-control"] == "no-store"
    assert mine.content == DOG_JPEG.read_bytes()
    assert (
        client.get(f"/model/predictions/{prediction_id}/image", headers=admin.headers).status_code
        == 200
    )

    theirs = client.get(f"/model/predictions/{prediction_id}/image", headers=bob.headers)
    missing = client.get("/model/predictions/999999/image", headers=bob.headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == {"detail": f"Prediction {prediction_id} not found"}
    assert client.get(f"/model/predictions/{prediction_id}/image").status_code == 401
    assert client.get("/model/predictions/0/image", headers=alice.headers).status_code == 422


def test_an_image_removed_while_it_is_sent_is_sent_whole(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    """The history's retention or an account's deletion removes the file between the route's
    check and the sending of its bytes: the answer, begun, is sent from the file opened."""
    alice = make_user()
    prediction_id = predict(client, alice, "dog.jpeg")
    state = app_state(app)
    owner = AuthenticatedUser(id=alice.id, email=alice.email, name="Alice", is_admin=False)

    async def answer_then_remove() -> bytes:
        response = await read_prediction_image(
            prediction_id, UnitsOfWork(state.database, writes=False), owner, state.settings
        )
        for stored in state.settings.upload_dir.iterdir():
            stored.unlink()
        return b"".join([bytes(chunk) async for chunk in response.body_iterator])

    assert asyncio.run(answer_then_remove()) == DOG_JPEG.read_bytes()
    gone = client.get(f"/model/predictions/{prediction_id}/image", headers=alice.headers)
    assert gone.status_code == 404
    assert gone.json() == {"detail": f"The image of prediction {prediction_id} is no longer stored"}
