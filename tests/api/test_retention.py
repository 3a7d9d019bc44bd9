"""History retention through the embedded service (the real model, recorder and uploads
folder, SQLite and PostgreSQL): a user keeps their newest predictions, the older ones go with
their feedback and the uploads nobody's rows name, and the storage quota counts what stays."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from imgclf.api.predictions import retention as retention_module
from imgclf.api.security import create_access_token
from imgclf.api.state import app_state
from imgclf.db.models import Prediction, User
from imgclf.serving import create_service_app
from imgclf.settings import Settings
from tests.support import sample_photos

KEEP = 3


def settings_for(database_url: str, model_dir: Path, tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        database_url=database_url,
        model_dir=model_dir,
        data_dir=tmp_path,
        model_threads=1,
        worker_concurrency=1,
        cache=False,
        history_keep=KEEP,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def app(database_url: str, model_dir: Path, tmp_path: Path) -> FastAPI:
    # An hour between sweeps: the tests sweep when they choose to.
    return create_service_app(settings_for(database_url, model_dir, tmp_path, history_sweep_s=3600))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def account(app: FastAPI, email: str) -> dict[str, str]:
    with app_state(app).database.transaction() as session:
        user = User(name="Someone", email=email, hashed_password="not a real hash")
        session.add(user)
        session.flush()
        token = create_access_token(user.id, app_state(app).settings)
    return {"Authorization": f"Bearer {token}"}


def predict(client: TestClient, headers: dict[str, str], photo: bytes) -> dict[str, object]:
    answer = client.post(
        "/model/predict", files={"file": ("photo.jpg", photo, "image/jpeg")}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def stored_bytes(app: FastAPI, email: str) -> int:
    with app_state(app).database.transaction(writes=False) as session:
        return session.scalar(select(User.storage_bytes).where(User.email == email)) or 0


def feedback_bytes(app: FastAPI, email: str) -> int:
    with app_state(app).database.transaction(writes=False) as session:
        return session.scalar(select(User.feedback_bytes).where(User.email == email)) or 0


@pytest.mark.parametrize("batch", [1, retention_module.PRUNE_BATCH])
def test_the_oldest_predictions_go_with_their_feedback_and_unshared_uploads(
    client: TestClient, app: FastAPI, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_module, "PRUNE_BATCH", batch)  # 1: a transaction a row
    alice, bob = account(app, "alice@example.com"), account(app, "bob@example.com")
    photos = sample_photos(5)
    answers = [predict(client, alice, photo) for photo in photos]
    predict(client, bob, photos[0])  # Bob's copy of Alice's first picture
    for answer in (answers[0], answers[4]):
        feedback = {"prediction_id": answer["prediction_id"], "correct": True, "feedback": "Yes!"}
        assert client.post("/feedback/", json=feedback, headers=alice).status_code == 201
    uploads = app_state(app).settings.upload_dir
    names = [str(answer["image_file_name"]) for answer in answers]
    retention = app_state(app).retention

    removed = retention.sweep()

    assert removed == 2
    history = client.get("/model/predictions", headers=alice).json()
    assert [item["id"] for item in history] == [a["prediction_id"] for a in answers[:1:-1]]
    feedback = client.get("/feedback/", headers=alice).json()
    assert [item["prediction_id"] for item in feedback] == [answers[4]["prediction_id"]]
    # Bob's copy keeps the first picture on disk; nobody names the second any more.
    assert [(uploads / name).exists() for name in names] == [True, False, True, True, True]
    assert stored_bytes(app, "alice@example.com") == sum(len(p) for p in photos[2:])
    assert len(client.get("/model/predictions", headers=bob).json()) == 1
    # The swept feedback's note no longer counts in her feedback quota; the kept one does.
    (kept_note,) = [item["feedback"] for item in feedback]
    assert feedback_bytes(app, "alice@example.com") == len(kept_note.encode()) > 0

    # The second picture again: stored and charged again, and the oldest kept one goes.
    again = predict(client, alice, photos[1])
    assert (uploads / names[1]).exists()
    assert retention.sweep() == 1
    history = client.get("/model/predictions", headers=alice).json()
    kept = [again, answers[4], answers[3]]
    assert [item["id"] for item in history] == [a["prediction_id"] for a in kept]
    assert not (uploads / names[2]).exists()
    assert stored_bytes(app, "alice@example.com") == sum(len(photos[n]) for n in (1, 3, 4))


def test_feedback_on_a_prediction_that_went_is_404(client: TestClient, app: FastAPI) -> None:
    alice = account(app, "alice@example.com")
    photos = sample_photos(KEEP + 1)
    first = predict(client, alice, photos[0])
    for photo in photos[1:]:
        predict(client, alice, photo)
    app_state(app).retention.sweep()

    by_id = client.post(
        "/feedback/", json={"prediction_id": first["prediction_id"], "correct": True}, headers=alice
    )
    seed_style = {
        "feedback": "right",
        "score": first["score"],
        "predicted_class": first["prediction"],
        "image_file_name": first["image_file_name"],
    }
    by_name = client.post("/feedback/", json=seed_style, headers=alice)

    assert by_id.status_code == by_name.status_code == 404
    assert client.get("/feedback/", headers=alice).json() == []


def test_sweeps_while_the_user_uploads_leave_rows_files_and_quota_in_step(
    client: TestClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads from four threads and sweeps from a fifth, on one account: every upload is
    answered, and at the end each kept row's file is on disk and the quota counts exactly the
    kept rows' files (PostgreSQL: the sweep takes the user's row before the uploads, as an
    account's deletion does, so it and the recorder wait for each other, never deadlock)."""
    monkeypatch.setattr(retention_module, "PRUNE_BATCH", 2)  # more transactions to interleave
    alice = account(app, "alice@example.com")
    photos = sample_photos(8)
    retention = app_state(app).retention
    done = threading.Event()
    removed = 0

    def sweep() -> None:
        nonlocal removed
        while not done.is_set():
            removed += retention.sweep()
            time.sleep(0.01)

    def upload(offset: int) -> list[int]:
        return [
            client.post(
                "/model/predict",
                files={"file": ("p.jpg", photos[(offset + n) % len(photos)], "image/jpeg")},
                headers=alice,
            ).status_code
            for n in range(6)
        ]

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            statuses = [status for run in pool.map(upload, range(4)) for status in run]
    finally:
        done.set()
        sweeper.join()
    removed += retention.sweep()

    assert statuses == [200] * 24
    assert removed == 24 - KEEP
    uploads = app_state(app).settings.upload_dir
    with app_state(app).database.transaction(writes=False) as session:
        names = list(session.scalars(select(Prediction.image_file_name)))
        rows = session.scalar(select(func.count()).select_from(Prediction))
    assert rows == KEEP
    assert all((uploads / name).exists() for name in names)
    on_disk = {path.name for path in uploads.iterdir() if not path.name.startswith(".")}
    assert on_disk == set(names)
    sizes = {len(photo) for photo in photos}
    assert stored_bytes(app, "alice@example.com") == sum(
        (uploads / name).stat().st_size for name in set(names)
    )
    assert all((uploads / name).stat().st_size in sizes for name in names)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_service_sweeps_by_itself_and_counts_what_went(
    database_url: str, model_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(
        database_url, model_dir, tmp_path, history_sweep_s=0.2, metrics_token="scraper-token"
    )
    app = create_service_app(settings)
    with TestClient(app) as client:
        alice = account(app, "alice@example.com")
        for photo in sample_photos(KEEP + 2):
            predict(client, alice, photo)
        deadline = time.monotonic() + 10
        while len(client.get("/model/predictions", headers=alice).json()) > KEEP:
            assert time.monotonic() < deadline, "no sweep within 10 s"
            time.sleep(0.1)
        metrics = client.get("/metrics", headers={"Authorization": "Bearer scraper-token"})
    assert "imgclf_history_pruned_total 2.0" in metrics.text


def test_a_prediction_committed_after_a_sweep_that_passed_its_id_is_swept(
    client: TestClient, app: FastAPI
) -> None:
    """An id is drawn when its row is inserted: on PostgreSQL, a row of another process may
    commit after a sweep that saw a larger id. The next sweep still looks back past it."""
    alice = account(app, "alice@example.com")
    first = predict(client, alice, sample_photos(1)[0])
    for _ in range(KEEP - 1):
        predict(client, alice, sample_photos(1)[0])
    retention = app_state(app).retention
    assert retention.sweep() == 0  # the first looks, at everyone: nobody is past KEEP
    database = app_state(app).database

    def add_row(owner: str, row_id: int) -> None:
        """A row as the recorder writes it (same picture: no new file, nothing to charge)."""
        with database.transaction() as session:
            user_id = session.scalar(select(User.id).where(User.email == owner))
            source = session.get_one(Prediction, first["prediction_id"])
            values = {
                column: getattr(source, column)
                for column in ("image_file_name", "image_bytes", "label", "score", "top_k")
            }
            session.add(
                Prediction(id=row_id, user_id=user_id, model_id="m@1", latency_ms=1.0, **values)
            )

    account(app, "bob@example.com")
    add_row("bob@example.com", 100)
    assert retention.sweep() == 0  # it saw id 100
    add_row("alice@example.com", 50)  # drawn before that sweep, committed after it

    assert retention.sweep() == 1
    assert len(client.get("/model/predictions", headers=alice).json()) == KEEP
