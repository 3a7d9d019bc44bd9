"""POST /model/predict and friends in the embedded mode: the real model behind the real API."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from imgclf.api.predictions.timing import parse_server_timing
from imgclf.api.predictions.uploads import AcceptedUpload, DigestCollisionError
from imgclf.model.classifier import load_classifier
from imgclf.model.images import ImageLimits
from imgclf.serving import create_service_app
from imgclf.settings import Settings
from tests.api.conftest import Caller
from tests.support import DOG_JPEG, dog_upload

DOG_MD5 = "0a7c757a80f2c5b13fa7a2a47a683593"

METRICS_TOKEN = "test-metrics-token"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def settings(database_url: str, model_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        model_dir=model_dir,
        model_threads=1,
        metrics_token=METRICS_TOKEN,  # type: ignore[arg-type]
        server_timing=True,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_service_app(settings)


@pytest.fixture
def alice(make_user: Callable[..., Caller]) -> Caller:
    return make_user(name="Alice")


def png_bytes(mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.open(DOG_JPEG).convert(mode).resize(size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_dog_is_an_eskimo_dog_as_the_classifier_says(
    client: TestClient, alice: Caller, settings: Settings
) -> None:
    response = client.post("/model/predict", files=dog_upload(), headers=alice.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["prediction"] == "Eskimo_dog"
    assert body["image_file_name"] == f"{DOG_MD5}.jpeg"
    assert len(body["top_k"]) == 5
    direct = load_classifier(settings).classify_bytes([DOG_JPEG.read_bytes()], ImageLimits())[0]
    assert not isinstance(direct, Exception)
    assert body["score"] == round(direct[0].score, 4)
    assert body["cached"] is False
    assert (settings.upload_dir / f"{DOG_MD5}.jpeg").read_bytes() == DOG_JPEG.read_bytes()

    history = client.get("/model/predictions", headers=alice.headers).json()
    assert [item["id"] for item in history] == [body["prediction_id"]]
    assert history[0]["label"] == "Eskimo_dog"

    stages = parse_server_timing(response.headers["Server-Timing"])
    assert list(stages) == ["read", "check", "queue", "decode", "inference", "record", "app"]
    assert min(stages["decode"], stages["inference"], stages["record"]) > 0
    assert stages["app"] >= sum(ms for name, ms in stages.items() if name != "app")


def test_repeated_upload_is_answered_from_the_cache(client: TestClient, alice: Caller) -> None:
    first = client.post("/model/predict", files=dog_upload(), headers=alice.headers).json()
    second = client.post("/model/predict", files=dog_upload("again.JPG"), headers=alice.headers)

    assert second.status_code == 200
    assert second.json()["cached"] is True
    assert list(parse_server_timing(second.headers["Server-Timing"])) == [
        "read",
        "check",
        "cache",
        "record",
        "app",
    ]
    assert second.json()["top_k"] == first["top_k"]
    assert second.json()["image_file_name"] == f"{DOG_MD5}.jpg"
    assert "imgclf_cache_hits_total 1.0" in client.get("/metrics", headers=SCRAPER).text


def test_cache_can_be_turned_off(model_dir: Path, tmp_path: Path, password_hash: str) -> None:
    settings = Settings(model_dir=model_dir, cache=False, data_dir=tmp_path / "nocache")
    with TestClient(create_service_app(settings)) as client:
        token = client.post(
            "/login", data={"username": settings.admin_email, "password": "admin"}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        responses = [
            client.post("/model/predict", files=dog_upload(), headers=headers) for _ in range(2)
        ]
    answers = [response.json() for response in responses]
    assert [answer["cached"] for answer in answers] == [False, False]
    # Off by default: the stages' times would tell whether anyone had sent the picture before.
    assert "Server-Timing" not in responses[0].headers
    assert answers[0]["top_k"] == answers[1]["top_k"]


def test_content_decides_the_decoder_and_the_name_keeps_the_extension(
    client: TestClient, alice: Caller
) -> None:
    files = {"file": ("photo.jpg", png_bytes(), "image/jpeg")}
    response = client.post("/model/predict", files=files, headers=alice.headers)

    assert response.status_code == 200, response.text
    assert response.json()["image_file_name"].endswith(".jpg")


@pytest.mark.parametrize(
    ("name", "content", "status", "message"),
    [
        ("notes.txt", b"hello", 400, "File type is not supported."),
        ("notes.jpg", b"just some text, not a picture", 400, "File type is not supported."),
        ("empty.png", b"", 400, ""),
        ("cut.jpg", DOG_JPEG.read_bytes()[:2000], 400, "could not be decoded"),
    ],
)
def test_bad_files_are_refused_with_a_reason_and_the_worker_keeps_serving(
    client: TestClient, alice: Caller, name: str, content: bytes, status: int, message: str
) -> None:
    response = client.post(
        "/model/predict", files={"file": (name, content, "image/jpeg")}, headers=alice.headers
    )

    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    after = client.post("/model/predict", files=dog_upload(), headers=alice.headers)
    assert after.json()["prediction"] == "Eskimo_dog"


def test_too_large_a_file_gets_413_with_the_limit(
    model_dir: Path, tmp_path: Path, password_hash: str
) -> None:
    settings = Settings(model_dir=model_dir, max_upload_bytes=10_000, data_dir=tmp_path / "d")
    with TestClient(create_service_app(settings)) as client:
        token = client.post(
            "/login", data={"username": settings.admin_email, "password": "admin"}
        ).json()["access_token"]
        response = client.post(
            "/model/predict", files=dog_upload(), headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_predict_needs_a_token_and_a_file(client: TestClient, alice: Caller) -> None:
    assert client.post("/model/predict", files=dog_upload()).status_code == 401
    missing = client.post("/model/predict", headers=alice.headers)
    assert missing.status_code == 422
    assert "file" in missing.json()["detail"]


def test_predictions_list_only_your_own_newest_first(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    ids = [
        client.post("/model/predict", files=dog_upload(), headers=alice.headers).json()[
            "prediction_id"
        ]
        for _ in range(3)
    ]
    page = client.get("/model/predictions?limit=2", headers=alice.headers).json()

    assert [item["id"] for item in page] == ids[::-1][:2]
    assert client.get("/model/predictions", headers=bob.headers).json() == []


def test_feedback_may_point_at_your_own_prediction_only(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    prediction = client.post("/model/predict", files=dog_upload(), headers=alice.headers).json()
    feedback = {
        "feedback": "right",
        "score": prediction["score"],
        "predicted_class": prediction["prediction"],
        "image_file_name": prediction["image_file_name"],
        "prediction_id": prediction["prediction_id"],
    }

    assert client.post("/feedback", json=feedback, headers=alice.headers).status_code == 201
    assert client.post("/feedback", json=feedback, headers=bob.headers).status_code == 404


def test_async_job_is_readable_by_its_owner_only(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    accepted = client.post("/model/jobs", files=dog_upload(), headers=alice.headers)
    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]

    deadline = time.monotonic() + 10
    status = client.get(f"/model/jobs/{job_id}", headers=alice.headers).json()
    while status["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
        status = client.get(f"/model/jobs/{job_id}", headers=alice.headers).json()

    assert status["status"] == "done"
    assert status["prediction"] == "Eskimo_dog"
    assert client.get(f"/model/jobs/{job_id}", headers=bob.headers).status_code == 403
    unknown = client.get(f"/model/jobs/{'nope' * 1000}", headers=alice.headers)
    assert unknown.status_code == 404
    assert "nope" not in unknown.json()["detail"]  # what the client sent is not sent back
    # The answer is readable as soon as the model gives it; its row follows a moment later.
    history = client.get("/model/predictions", headers=alice.headers).json()
    while not history and time.monotonic() < deadline:
        time.sleep(0.05)
        history = client.get("/model/predictions", headers=alice.headers).json()
    assert [item["label"] for item in history] == ["Eskimo_dog"]


def test_an_upload_refused_at_its_record_fails_its_prediction_and_its_job_with_the_reason(
    client: TestClient, alice: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an upload forged to share a stored picture's MD5 meets once the model has answered
    (tests/api/test_recorder.py forges one for the recorder): 400 with the reason, and a job
    that reads "failed" with it rather than "done" with nothing recorded."""

    def refuse(upload_dir: Path, upload: AcceptedUpload) -> None:
        raise DigestCollisionError()

    monkeypatch.setattr("imgclf.api.predictions.recorder.store_upload", refuse)
    answer = client.post("/model/predict", files=dog_upload(), headers=alice.headers)
    assert answer.status_code == 400
    assert "same MD5 digest is already stored" in answer.json()["detail"]

    accepted = client.post("/model/jobs", files=dog_upload(), headers=alice.headers)
    job_id = accepted.json()["job_id"]
    deadline = time.monotonic() + 10
    status = client.get(f"/model/jobs/{job_id}", headers=alice.headers).json()
    while status["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
        status = client.get(f"/model/jobs/{job_id}", headers=alice.headers).json()
    assert status["status"] == "failed"
    assert "same MD5 digest is already stored" in status["error"]
    assert client.get("/model/predictions", headers=alice.headers).json() == []


def test_ready_once_the_model_is_loaded_and_metrics_count_batches(
    client: TestClient, alice: Caller
) -> None:
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["workers"] == 1
    assert ready.json()["checks"]["model"].startswith("efficientnet-lite0@")

    client.post("/model/predict", files=dog_upload(), headers=alice.headers)
    metrics = client.get("/metrics", headers=SCRAPER).text
    assert "imgclf_batch_size_count 1.0" in metrics
    assert (
        'imgclf_http_requests_total{method="POST",route="/model/predict",status="200"}' in metrics
    )
