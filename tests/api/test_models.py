"""Several models at once in the embedded mode: ?model=, GET /models, and the admin's swap."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from imgclf.serving import create_service_app
from imgclf.settings import Settings
from tests.api.conftest import Caller
from tests.support import dog_upload


@pytest.fixture
def settings(model_repository: Path, tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'models.db'}",
        model_repository=model_repository,
        model_threads=1,
        worker_concurrency=1,
        cache=False,
        metrics_token="test-metrics-token",  # type: ignore[arg-type]
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_service_app(settings)


@pytest.fixture
def alice(make_user: Callable[..., Caller]) -> Caller:
    return make_user(name="Alice")


@contextlib.contextmanager
def admin_client(repository: Path, database: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The embedded service on its own copy of a repository, and the admin's headers."""
    settings = Settings(
        database_url=f"sqlite:///{database}",
        model_repository=repository,
        model_threads=1,
        worker_concurrency=1,
    )
    with TestClient(create_service_app(settings)) as client:
        token = client.post(
            "/login", data={"username": "admin@example.com", "password": "admin"}
        ).json()["access_token"]
        yield client, {"Authorization": f"Bearer {token}"}


def test_a_request_picks_its_model_and_the_answer_names_it(
    client: TestClient, alice: Caller
) -> None:
    default = client.post("/model/predict", files=dog_upload(), headers=alice.headers)
    second = client.post(
        "/model/predict?model=second-model", files=dog_upload(), headers=alice.headers
    )

    assert default.status_code == 200, default.text
    assert default.json()["model"] == "efficientnet-lite0@2"  # the newest until one is promoted
    assert default.json()["prediction"] == "Eskimo_dog"
    assert second.status_code == 200, second.text
    assert second.json()["model"] == "second-model@1"
    history = client.get("/model/predictions", headers=alice.headers).json()
    assert [item["model_id"] for item in history] == ["second-model@1", "efficientnet-lite0@2"]
    scraper = {"Authorization": "Bearer test-metrics-token"}
    metrics = client.get("/metrics", headers=scraper).text
    assert 'imgclf_model_answers_total{model="second-model@1",outcome="ok"} 1.0' in metrics
    assert 'imgclf_model_answers_total{model="efficientnet-lite0@2",outcome="ok"} 1.0' in metrics
    assert 'imgclf_model_queue_depth{model="second-model"} 0.0' in metrics


def test_an_unknown_model_is_refused_naming_the_models_there(
    client: TestClient, alice: Caller
) -> None:
    for route in ("/model/predict", "/model/jobs"):
        response = client.post(f"{route}?model=resnet50", files=dog_upload(), headers=alice.headers)

        assert response.status_code == 404, response.text
        assert response.json() == {
            "detail": "Unknown model 'resnet50'; available: efficientnet-lite0, second-model"
        }


def test_models_lists_names_versions_live_and_workers(client: TestClient, alice: Caller) -> None:
    response = client.get("/models", headers=alice.headers)

    assert response.status_code == 200, response.text
    models = {model["name"]: model for model in response.json()}
    assert set(models) == {"efficientnet-lite0", "second-model"}
    lite0 = models["efficientnet-lite0"]
    assert (lite0["live"], lite0["versions"], lite0["default"]) == (
        "efficientnet-lite0@2",
        [1, 2],
        True,
    )
    assert (lite0["input_size"], lite0["precision"], lite0["accuracy"]) == (224, "fp32", 0.751)
    assert (lite0["workers"], lite0["queue_depth"], lite0["loaded"]) == (
        1,
        0,
        ["efficientnet-lite0@2"],
    )
    second = models["second-model"]
    assert (second["live"], second["precision"], second["default"]) == (
        "second-model@1",
        "int8",
        False,
    )
    assert client.get("/models").status_code == 401


def test_an_admin_swaps_the_live_version_and_rolls_it_back(
    client: TestClient, alice: Caller, admin: Caller, settings: Settings
) -> None:
    refused = client.put(
        "/models/efficientnet-lite0/live", json={"version": 1}, headers=alice.headers
    )
    missing = client.put(
        "/models/efficientnet-lite0/live", json={"version": 9}, headers=admin.headers
    )
    swapped = client.put(
        "/models/efficientnet-lite0/live", json={"version": 1}, headers=admin.headers
    )
    after_swap = client.post("/model/predict", files=dog_upload(), headers=alice.headers)
    job = client.post("/model/jobs", files=dog_upload(), headers=alice.headers)
    record = json.loads((settings.data_dir / "live-models.json").read_text())
    rolled_back = client.put(
        "/models/efficientnet-lite0/live", json={"version": 2}, headers=admin.headers
    )
    after_rollback = client.post("/model/predict", files=dog_upload(), headers=alice.headers)

    assert refused.status_code == 403
    assert missing.status_code == 404
    assert "efficientnet-lite0@1, efficientnet-lite0@2" in missing.json()["detail"]
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["live"] == "efficientnet-lite0@1"
    assert "efficientnet-lite0@1" in swapped.json()["loaded"]
    assert after_swap.json()["model"] == "efficientnet-lite0@1"
    assert record == {"efficientnet-lite0": 1, "second-model": 1}
    assert rolled_back.json()["live"] == "efficientnet-lite0@2"
    assert after_rollback.json()["model"] == "efficientnet-lite0@2"
    assert finished_job(client, job.json()["job_id"], alice)["model"] == "efficientnet-lite0@1"


def finished_job(client: TestClient, job_id: str, caller: Caller) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body: dict[str, object] = client.get(f"/model/jobs/{job_id}", headers=caller.headers).json()
        if body["status"] != "pending":
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still pending")


def test_a_restart_keeps_the_promoted_version(settings: Settings) -> None:
    def live_after(version: int | None) -> str:
        with TestClient(create_service_app(settings)) as client:
            token = client.post(
                "/login", data={"username": "admin@example.com", "password": "admin"}
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            if version is not None:
                promoted = client.put(
                    "/models/efficientnet-lite0/live", json={"version": version}, headers=headers
                )
                assert promoted.status_code == 200, promoted.text
            models = client.get("/models", headers=headers).json()
            return next(m["live"] for m in models if m["name"] == "efficientnet-lite0")

    assert live_after(1) == "efficientnet-lite0@1"
    assert live_after(None) == "efficientnet-lite0@1"


def test_a_version_copied_in_while_running_can_be_promoted(
    model_repository: Path, tmp_path: Path, password_hash: str
) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(model_repository, repository)
    with admin_client(repository, tmp_path / "copied.db") as (client, headers):
        new = repository / "efficientnet-lite0" / "3"
        shutil.copytree(repository / "efficientnet-lite0" / "2", new)
        meta = json.loads((new / "bundle.json").read_text())
        (new / "bundle.json").write_text(json.dumps({**meta, "version": 3}))
        # Listed at once, so the admin's page offers it (it listed the versions of the start).
        listed = {m["name"]: m for m in client.get("/models", headers=headers).json()}

        promoted = client.put(
            "/models/efficientnet-lite0/live", json={"version": 3}, headers=headers
        )
        answer = client.post("/model/predict", files=dog_upload(), headers=headers)

    assert listed["efficientnet-lite0"]["versions"] == [1, 2, 3]
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["versions"] == [1, 2, 3]
    assert answer.json()["model"] == "efficientnet-lite0@3"


def test_a_broken_version_is_refused_and_the_live_one_stays(
    model_repository: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(model_repository, repository)
    with admin_client(repository, tmp_path / "broken.db") as (client, headers):
        broken = repository / "efficientnet-lite0" / "3"
        broken.mkdir()
        meta = json.loads((repository / "efficientnet-lite0" / "2" / "bundle.json").read_text())
        (broken / "bundle.json").write_text(json.dumps({**meta, "version": 3}))
        (broken / "model.onnx").write_bytes(b"not a model")
        (broken / "labels.json").write_text('["dog"]')
        refused = client.put(
            "/models/efficientnet-lite0/live", json={"version": 3}, headers=headers
        )
        answer = client.post("/model/predict", files=dog_upload(), headers=headers)

    assert refused.status_code == 503
    assert "efficientnet-lite0@3 cannot be loaded" in refused.json()["detail"]
    assert "checksum" in refused.json()["detail"]
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "efficientnet-lite0@2"


def test_each_model_has_its_own_deadline(model_repository: Path, tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'deadlines.db'}",
        model_repository=model_repository,
        model_threads=1,
        worker_concurrency=1,
        cache=False,
        model_timeouts_s={"second-model": 0.001},
    )
    with TestClient(create_service_app(settings)) as client:
        token = client.post(
            "/login", data={"username": "admin@example.com", "password": "admin"}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        slow = client.post("/model/predict?model=second-model", files=dog_upload(), headers=headers)
        default = client.post("/model/predict", files=dog_upload(), headers=headers)

    assert slow.status_code == 504
    assert "0.001 s" in slow.json()["detail"]
    assert default.status_code == 200


def test_a_promotion_while_the_repository_is_gone_is_refused_and_serving_goes_on(
    model_repository: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(model_repository, repository)
    with admin_client(repository, tmp_path / "gone.db") as (client, headers):
        shutil.rmtree(repository)  # a volume unmounted, say
        refused = client.put(
            "/models/efficientnet-lite0/live", json={"version": 1}, headers=headers
        )
        answer = client.post("/model/predict", files=dog_upload(), headers=headers)

    assert refused.status_code == 503, refused.text
    assert "The model repository cannot be read" in refused.json()["detail"]
    assert "live version has not changed" in refused.json()["detail"]
    assert answer.json()["model"] == "efficientnet-lite0@2"
