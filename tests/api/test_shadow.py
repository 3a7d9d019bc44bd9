"""Shadow comparisons in the embedded mode: the admin's routes, and copies that never touch the
caller's answer (a candidate that fails, a busy service)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from imgclf.serving import create_service_app
from imgclf.settings import Settings
from tests.api.conftest import Caller
from tests.support import sample_uploads

LITE0 = "efficientnet-lite0"
SCRAPER = {"Authorization": "Bearer test-metrics-token"}


def _link_bundle(source: Path, target: Path, **meta: object) -> None:
    target.mkdir(parents=True)
    for file in ("model.onnx", "labels.json"):
        try:
            os.link(source / file, target / file)
        except OSError:
            shutil.copyfile(source / file, target / file)
    bundle = json.loads((source / "bundle.json").read_text())
    bundle.update(meta)
    (target / "bundle.json").write_text(json.dumps(bundle, indent=2))


@pytest.fixture(scope="module")
def repository(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """efficientnet-lite0 version 1 (live), 2 (a broken file: it cannot be loaded) and 3 (the
    same network as 1, a working candidate)."""
    root = tmp_path_factory.mktemp("shadow-repository")
    _link_bundle(model_dir, root / LITE0 / "1", name=LITE0, version=1)
    _link_bundle(model_dir, root / LITE0 / "3", name=LITE0, version=3)
    broken = root / LITE0 / "2"
    broken.mkdir()
    shutil.copyfile(model_dir / "labels.json", broken / "labels.json")
    (broken / "model.onnx").write_bytes(b"not an ONNX file")
    bundle = json.loads((model_dir / "bundle.json").read_text())
    bundle.update(name=LITE0, version=2)
    (broken / "bundle.json").write_text(json.dumps(bundle))
    return root


@pytest.fixture
def settings(repository: Path, tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    (data_dir / "live-models.json").write_text(json.dumps({LITE0: 1}))
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{tmp_path / 'shadow.db'}",
        model_repository=repository,
        model_threads=1,
        worker_concurrency=1,
        cache=False,
        max_pending=4,
        metrics_token="test-metrics-token",  # type: ignore[arg-type]
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_service_app(settings)


@pytest.fixture
def alice(make_user: Callable[..., Caller]) -> Caller:
    return make_user(name="Alice")


def _metric_total(text: str, prefix: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def test_only_admins_set_or_read_a_shadow(client: TestClient, alice: Caller) -> None:
    body = {"candidate": f"{LITE0}@3", "fraction": 0.5}
    for method, kwargs in (("PUT", {"json": body}), ("GET", {}), ("DELETE", {})):
        refused = client.request(method, f"/models/{LITE0}/shadow", headers=alice.headers, **kwargs)
        anonymous = client.request(method, f"/models/{LITE0}/shadow", **kwargs)

        assert refused.status_code == 403, refused.text
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.json() == {"detail": "Not authenticated"}


def test_the_setting_is_checked_and_persists(
    client: TestClient, admin: Caller, settings: Settings, app: FastAPI
) -> None:
    url = f"/models/{LITE0}/shadow"
    too_much = client.put(
        url, json={"candidate": f"{LITE0}@3", "fraction": 1.5}, headers=admin.headers
    )
    negative = client.put(
        url, json={"candidate": f"{LITE0}@3", "fraction": -0.1}, headers=admin.headers
    )
    unknown = client.put(
        url, json={"candidate": "resnet50@1", "fraction": 0.1}, headers=admin.headers
    )
    no_model = client.put(
        "/models/resnet50/shadow",
        json={"candidate": f"{LITE0}@3", "fraction": 0.1},
        headers=admin.headers,
    )
    itself = client.put(
        url, json={"candidate": f"{LITE0}@1", "fraction": 0.1}, headers=admin.headers
    )
    not_a_version = client.put(
        url, json={"candidate": LITE0, "fraction": 0.1}, headers=admin.headers
    )

    assert too_much.status_code == 422
    assert too_much.json() == {
        "detail": "body.fraction: the fraction must be between 0 and 1 (0 stops the shadow)"
    }
    assert negative.json() == too_much.json()
    assert unknown.status_code == 404
    assert unknown.json() == {
        "detail": "Unknown model 'resnet50@1'; available: "
        "efficientnet-lite0@1, efficientnet-lite0@2, efficientnet-lite0@3"
    }
    assert no_model.status_code == 404
    assert no_model.json() == {"detail": "Unknown model 'resnet50'; available: efficientnet-lite0"}
    assert itself.status_code == 422
    assert "is the live version" in itself.json()["detail"]
    assert not_a_version.status_code == 422
    assert "body.candidate" in not_a_version.json()["detail"]

    set_ = client.put(
        url, json={"candidate": f"{LITE0}@3", "fraction": 0.25}, headers=admin.headers
    )
    assert set_.status_code == 200, set_.text
    assert set_.json() == {"model": LITE0, "candidate": f"{LITE0}@3", "fraction": 0.25}
    stored = json.loads((settings.data_dir / "shadow-models.json").read_text())
    assert stored == {LITE0: {"candidate": f"{LITE0}@3", "fraction": 0.25}}
    report = client.get(url, headers=admin.headers).json()
    assert (report["candidate"], report["fraction"], report["days"], report["pairs"]) == (
        f"{LITE0}@3",
        0.25,
        7,
        [],
    )
    # Another process (here a second app on the same data folder) reads the same setting.
    with TestClient(create_service_app(settings)) as other:
        assert other.get(url, headers=admin.headers).json()["candidate"] == f"{LITE0}@3"

    stopped = client.put(
        url, json={"candidate": f"{LITE0}@3", "fraction": 0}, headers=admin.headers
    )
    assert stopped.json() == {"model": LITE0, "candidate": None, "fraction": 0.0}
    client.put(url, json={"candidate": f"{LITE0}@3", "fraction": 1}, headers=admin.headers)
    deleted = client.delete(url, headers=admin.headers)
    assert deleted.status_code == 204
    assert json.loads((settings.data_dir / "shadow-models.json").read_text()) == {}
    assert client.get(f"{url}?days=0", headers=admin.headers).status_code == 422


def _answers(
    client: TestClient,
    caller: Caller,
    uploads: list[dict[str, tuple[str, bytes, str]]],
    threads: int,
) -> list[tuple[int, object]]:
    """Each upload's status and answer (label and top-k), ``threads`` at a time."""
    answers: list[tuple[int, object]] = [(0, None)] * len(uploads)

    def send(position: int) -> None:
        response = client.post("/model/predict", files=uploads[position], headers=caller.headers)
        body = response.json()
        answers[position] = (
            response.status_code,
            (body.get("prediction"), body.get("top_k"), body.get("model")),
        )

    for start in range(0, len(uploads), threads):
        batch = [
            threading.Thread(target=send, args=(p,))
            for p in range(start, min(start + threads, len(uploads)))
        ]
        for thread in batch:
            thread.start()
        for thread in batch:
            thread.join()
    return answers


def _compared(client: TestClient) -> float:
    metrics = client.get("/metrics", headers=SCRAPER).text
    return _metric_total(metrics, "imgclf_shadow_comparisons_total{")


def _dropped(client: TestClient, reason: str = "") -> float:
    """Copies of efficientnet-lite0's uploads not compared (for ``reason``, or any)."""
    metrics = client.get("/metrics", headers=SCRAPER).text
    prefix = f'imgclf_shadow_dropped_total{{model="{LITE0}",'
    return _metric_total(metrics, prefix + reason)


def _wait_for_dropped(client: TestClient, count: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while _dropped(client) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_failing_candidate_or_a_busy_service_leaves_the_answers_alone(
    client: TestClient, alice: Caller, admin: Caller, settings: Settings
) -> None:
    uploads = sample_uploads(12)
    url = f"/models/{LITE0}/shadow"
    without = _answers(client, alice, uploads, threads=4)

    # Version 2 cannot be loaded: every copy made fails, no answer changes. (On a machine busy
    # with other work the gate may drop some copies before they are tried: each upload's copy
    # is accounted for once either way.)
    client.put(url, json={"candidate": f"{LITE0}@2", "fraction": 1}, headers=admin.headers)
    failing = _answers(client, alice, uploads, threads=1)
    _wait_for_dropped(client, len(uploads))
    # A lone caller in a tight loop can keep a fast worker busy enough that the gate drops every
    # copy untried; a lone upload after half a second of quiet (how far back the worker's busy
    # share looks) has its copy tried.
    retried = 0
    while _dropped(client, 'reason="failed"') == 0 and retried < 5:
        time.sleep(0.6)
        _answers(client, alice, uploads[retried : retried + 1], threads=1)
        retried += 1
        _wait_for_dropped(client, len(uploads) + retried)
    failed = _dropped(client, 'reason="failed"')
    dropped_while_failing = _dropped(client)
    # A working candidate of the same name, copies of every upload, four callers at a time
    # against an admission room of four: copies are dropped, never a caller.
    client.put(url, json={"candidate": f"{LITE0}@3", "fraction": 1}, headers=admin.headers)
    busy = _answers(client, alice, uploads, threads=4)
    # Whether any of those copies found room depends on timing; one caller at a time on an idle
    # service always gets its copy compared.
    quiet = 0
    while _compared(client) == 0 and quiet < 5:
        _answers(client, alice, uploads[quiet : quiet + 1], threads=1)
        quiet += 1
        deadline = time.monotonic() + 5
        while _compared(client) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    client.delete(url, headers=admin.headers)  # copies still on their way finish or drop

    assert [status for status, _ in without] == [200] * len(uploads)
    assert failing == without
    assert busy == without
    assert dropped_while_failing == len(uploads) + retried
    assert failed >= 1
    compared = _compared(client)
    dropped = _dropped(client) - dropped_while_failing
    assert compared + dropped <= len(uploads) + quiet  # each upload copied at most once
    assert compared >= 1
