"""Several models and live version swaps with real processes under load, in both modes.

The API runs as `imgclf serve` (tests.support.ServedApi); in Redis mode the workers are real
`imgclf worker` processes on a real Redis. Clients post the dog one request after another, so
each client's answers are in the order they were admitted: during a swap every answer must be
200 and name one version, and each client's answers change version exactly once per swap.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from imgclf.launcher import environment, imgclf_command
from tests.support import DOG_JPEG, ServedApi, stop_process, wait_for_workers

LITE0 = "efficientnet-lite0"
CLIENTS = 3


class SteadyLoad:
    """``CLIENTS`` threads, each posting the dog one request after another until stopped."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.answers: list[list[tuple[int, str]]] = [[] for _ in range(CLIENTS)]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(CLIENTS)
        ]

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as client:
            while not self._stop.is_set():
                files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
                response = client.post("/model/predict", files=files)
                model = response.json().get("model", "") if response.status_code == 200 else ""
                self.answers[index].append((response.status_code, model or response.text))

    def wait_for_more(self, count: int, timeout_s: float = 40) -> None:
        """Until every client has ``count`` more answers than now."""
        wanted = [len(answers) + count for answers in self.answers]
        deadline = time.monotonic() + timeout_s
        while any(len(a) < w for a, w in zip(self.answers, wanted, strict=True)):
            assert time.monotonic() < deadline, "the clients got no answers"
            time.sleep(0.05)

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def versions_in_order(answers: list[tuple[int, str]]) -> list[str]:
    """A client's answers as runs of one version: [v1, v2, v1] is a swap and a rollback."""
    assert {status for status, _model in answers} == {200}, answers
    return [model for model, _run in itertools.groupby(model for _status, model in answers)]


def admin_headers(url: str) -> dict[str, str]:
    login = httpx.post(f"{url}/login", data={"username": "admin@example.com", "password": "admin"})
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def swap_and_roll_back_under_load(
    api: ServedApi, promote_by_cli: Callable[[int], None], headers: dict[str, str]
) -> list[list[str]]:
    """Live version 1 -> 2 with the CLI, then back to 1 with the route, under load; each
    client's versions in the order its requests were admitted."""
    with SteadyLoad(api.url, headers) as load:
        load.wait_for_more(3)
        promote_by_cli(2)
        load.wait_for_more(3)
        back = httpx.put(
            f"{api.url}/models/{LITE0}/live", json={"version": 1}, headers=headers, timeout=120
        )
        assert back.status_code == 200, back.text
        assert back.json()["live"] == f"{LITE0}@1"
        load.wait_for_more(3)
    return [versions_in_order(answers) for answers in load.answers]


def cli_promoter(api: ServedApi) -> Callable[[int], None]:
    def promote(version: int) -> None:
        done = subprocess.run(
            [*imgclf_command(), "models", "promote", LITE0, str(version), "--api-url", api.url],
            env=environment({}, clean=True),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"live: {LITE0}@{version}" in done.stdout

    return promote


@pytest.fixture
def pinned_data_dir(tmp_path: Path) -> Path:
    """A data folder whose record says version 1 is live (the newest, 2, is only on disk)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "live-models.json").write_text(json.dumps({LITE0: 1}))
    return data_dir


def test_embedded_swap_under_load_fails_no_request_and_changes_version_once(
    model_repository: Path, pinned_data_dir: Path, tmp_path: Path
) -> None:
    with ServedApi(
        tmp_path / "api.log",
        pinned_data_dir,
        model_repository=model_repository,
        model_threads=1,
        worker_concurrency=2,
        cache=False,
    ) as api:
        headers = admin_headers(api.url)
        runs = swap_and_roll_back_under_load(api, cli_promoter(api), headers)
        models = {m["name"]: m for m in httpx.get(f"{api.url}/models", headers=headers).json()}

    assert runs == [[f"{LITE0}@1", f"{LITE0}@2", f"{LITE0}@1"]] * CLIENTS, api.output()[-3000:]
    assert models[LITE0]["live"] == f"{LITE0}@1"
    assert json.loads((pinned_data_dir / "live-models.json").read_text())[LITE0] == 1


def start_worker(
    redis_url: str, repository: Path, log: Path, *models: str
) -> subprocess.Popen[bytes]:
    """`imgclf worker --model ...` (every model when none is named)."""
    env = environment(
        {"model_repository": repository, "model_threads": 1, "worker_heartbeat_s": 0.5},
        clean=True,
    )
    named = [option for model in models for option in ("--model", model)]
    command = [*imgclf_command(), "worker", "--queue-url", redis_url, "--concurrency", "1"]
    with log.open("ab") as output:
        return subprocess.Popen(
            [*command, *named], env=env, stdout=output, stderr=subprocess.STDOUT
        )


@pytest.fixture
def redis_workers(
    redis_url: str, model_repository: Path, tmp_path: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One worker serving every model, one serving efficientnet-lite0 only."""
    workers = [
        start_worker(redis_url, model_repository, tmp_path / "all.log"),
        start_worker(redis_url, model_repository, tmp_path / "lite0.log", LITE0),
    ]
    try:
        wait_for_workers(redis_url, 2)
        yield workers
    finally:
        for worker in workers:
            stop_process(worker)


def test_redis_workers_serve_the_models_they_were_started_for(
    redis_url: str,
    redis_workers: list[subprocess.Popen[bytes]],
    model_repository: Path,
    tmp_path: Path,
) -> None:
    with ServedApi(
        tmp_path / "api.log", tmp_path / "data", queue_url=redis_url, cache=False
    ) as api:  # no repository here: the workers' heartbeats say what there is
        headers = admin_headers(api.url)
        models = {m["name"]: m for m in httpx.get(f"{api.url}/models", headers=headers).json()}
        second = httpx.post(
            f"{api.url}/model/predict?model=second-model",
            files={"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")},
            headers=headers,
            timeout=30,
        )
        unknown = httpx.post(
            f"{api.url}/model/predict?model=lite9",
            files={"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")},
            headers=headers,
        )
        stop_process(redis_workers[0])  # the only worker serving second-model
        time.sleep(2)  # its heartbeat key is gone at once; the API rereads them twice a second
        unavailable = httpx.post(
            f"{api.url}/model/predict?model=second-model",
            files={"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")},
            headers=headers,
        )

    assert set(models) == {LITE0, "second-model"}
    assert (models[LITE0]["workers"], models["second-model"]["workers"]) == (2, 1)
    assert models[LITE0]["live"] == f"{LITE0}@2"
    assert models["second-model"]["precision"] == "int8"
    assert second.status_code == 200, second.text
    assert (second.json()["model"], second.json()["prediction"]) == ("second-model@1", "Eskimo_dog")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == f"Unknown model 'lite9'; available: {LITE0}, second-model"
    assert unavailable.status_code == 503
    assert unavailable.json()["detail"] == (
        "The model 'second-model' is unavailable: no worker serves it now; "
        f"models being served: {LITE0}"
    )


def test_redis_swap_under_load_fails_no_request_and_changes_version_once(
    redis_url: str,
    redis_workers: list[subprocess.Popen[bytes]],
    model_repository: Path,
    tmp_path: Path,
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.hset("imgclf:live", LITE0, 1)  # as a promotion would have left it
    client.close()
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        queue_url=redis_url,
        model_repository=model_repository,
        cache=False,
    ) as api:
        headers = admin_headers(api.url)
        runs = swap_and_roll_back_under_load(api, cli_promoter(api), headers)
        models = {m["name"]: m for m in httpx.get(f"{api.url}/models", headers=headers).json()}

    assert runs == [[f"{LITE0}@1", f"{LITE0}@2", f"{LITE0}@1"]] * CLIENTS, api.output()[-3000:]
    assert (models[LITE0]["live"], models[LITE0]["workers"]) == (f"{LITE0}@1", 2)


def test_redis_promotion_the_workers_cannot_load_fails_and_changes_nothing(
    redis_url: str,
    redis_workers: list[subprocess.Popen[bytes]],
    model_repository: Path,
    tmp_path: Path,
) -> None:
    """Version 3 is in the API host's copy of the repository, on no worker's disk."""
    repository = tmp_path / "api-repository"
    shutil.copytree(model_repository, repository)
    shutil.copytree(repository / LITE0 / "2", repository / LITE0 / "3")
    meta = json.loads((repository / LITE0 / "3" / "bundle.json").read_text())
    (repository / LITE0 / "3" / "bundle.json").write_text(json.dumps({**meta, "version": 3}))
    with ServedApi(
        tmp_path / "api.log",
        tmp_path / "data",
        queue_url=redis_url,
        model_repository=repository,
        promote_timeout_s=3,
        cache=False,
    ) as api:
        headers = admin_headers(api.url)
        refused = httpx.put(
            f"{api.url}/models/{LITE0}/live", json={"version": 3}, headers=headers, timeout=30
        )
        answer = httpx.post(
            f"{api.url}/model/predict",
            files={"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")},
            headers=headers,
            timeout=30,
        )

    assert refused.status_code == 503
    assert refused.json()["detail"] == (
        f"The workers serving '{LITE0}' did not load version 3 within 3 s; "
        "the live version has not changed"
    )
    assert (answer.status_code, answer.json()["model"]) == (200, f"{LITE0}@2")
