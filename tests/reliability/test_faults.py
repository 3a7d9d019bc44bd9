"""Faults with real processes: workers stopped or killed under load, Redis and PostgreSQL
restarted, the upload disk full or gone, the API killed with jobs in flight, workers recycled.

The promises: no request lost or answered twice (a 200 is exactly one stored prediction), no
request waits past its deadline, and whatever cannot be served gets a clear 5xx with a message.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from imgclf.localservers import PostgresServer, RedisServer, ServerUnavailable
from imgclf.queue.keys import RedisKeys
from imgclf.serving import create_service_app
from imgclf.settings import Settings
from tests.conftest import unavailable
from tests.reliability.conftest import (
    ApiProcess,
    Load,
    count_predictions,
    dog_files,
    spawn_worker,
)
from tests.support import DOG_JPEG, stop_process, wait_for_workers

KEYS = RedisKeys()
DOG_MD5 = hashlib.md5(DOG_JPEG.read_bytes(), usedforsecurity=False).hexdigest()


def login(client: TestClient | httpx.Client) -> dict[str, str]:
    answer = client.post("/login", data={"username": "admin@example.com", "password": "admin"})
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def redis_service(redis_url: str, data_dir: Path, **overrides: object) -> TestClient:
    settings = Settings(
        queue_url=redis_url,
        data_dir=data_dir,
        cache=False,
        **overrides,  # type: ignore[arg-type]
    )
    return TestClient(create_service_app(settings))


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'imgclf.db').resolve()}"


def held_by(client: redis.Redis, pid: int) -> int:
    """Jobs the worker process ``pid`` has taken and not yet acknowledged."""
    consumers = client.xpending(KEYS.jobs("efficientnet-lite0"), KEYS.group).get("consumers") or []
    return sum(int(c["pending"]) for c in consumers if f"-{pid}-" in c["name"].decode())


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_sigterm_mid_load_drains_exits_0_and_every_request_is_answered_once(
    redis_url: str, redis_client: redis.Redis, model_dir: Path, tmp_path: Path
) -> None:
    # The first worker waits a little for fuller batches, so it surely holds jobs when stopped.
    first = spawn_worker(
        redis_url, model_dir, tmp_path / "first.log", max_batch_wait_ms=300, predict_timeout_s=20
    )
    second = spawn_worker(redis_url, model_dir, tmp_path / "second.log", predict_timeout_s=20)
    try:
        wait_for_workers(redis_url, 2)
        with redis_service(redis_url, tmp_path / "data", predict_timeout_s=20) as client:
            headers = login(client)
            load = Load(lambda: client.post("/model/predict", files=dog_files(), headers=headers))

            def stop_the_first_while_it_holds_jobs() -> None:
                wait_until(lambda: held_by(redis_client, first.pid) > 0, 30, "never held jobs")
                first.send_signal(signal.SIGTERM)
                assert first.wait(30) == 0
                time.sleep(1.5)  # the second worker carries on alone

            answers = load.run_while(stop_the_first_while_it_holds_jobs)
    finally:
        stop_process(first)
        stop_process(second)

    assert load.statuses() == {200: len(answers)}
    assert {a.body["prediction"] for a in answers} == {"Eskimo_dog"}
    assert len({a.body["prediction_id"] for a in answers}) == len(answers)
    assert count_predictions(sqlite_url(tmp_path / "data")) == (len(answers), len(answers))
    first_log = (tmp_path / "first.log").read_text()
    assert "SIGTERM received, draining" in first_log
    assert re.search(r"stopped after [1-9]\d* jobs", first_log)
    # Drained, not abandoned: nothing had to be taken over or set aside.
    assert "took over" not in (tmp_path / "second.log").read_text()
    assert redis_client.xlen(KEYS.dead_letters) == 0
    assert redis_client.xlen(KEYS.jobs("efficientnet-lite0")) == 0


def test_kill_9_under_sustained_load_loses_no_request_and_answers_none_twice(
    redis_url: str, redis_client: redis.Redis, model_dir: Path, tmp_path: Path
) -> None:
    timeout = {"predict_timeout_s": 8}  # a silent worker's jobs move after 2 s
    doomed = spawn_worker(
        redis_url, model_dir, tmp_path / "doomed.log", max_batch_wait_ms=200, **timeout
    )
    survivor = spawn_worker(redis_url, model_dir, tmp_path / "survivor.log", **timeout)
    try:
        wait_for_workers(redis_url, 2)
        with redis_service(redis_url, tmp_path / "data", **timeout) as client:
            headers = login(client)
            load = Load(lambda: client.post("/model/predict", files=dog_files(), headers=headers))

            def kill_one_mid_batch() -> None:
                time.sleep(1.0)
                wait_until(lambda: held_by(redis_client, doomed.pid) > 0, 30, "never held jobs")
                doomed.kill()
                doomed.wait()
                time.sleep(4.0)  # past the visibility timeout, under load all along

            answers = load.run_while(kill_one_mid_batch)
    finally:
        stop_process(doomed)
        stop_process(survivor)

    assert load.statuses() == {200: len(answers)}
    assert len({a.body["prediction_id"] for a in answers}) == len(answers)
    assert count_predictions(sqlite_url(tmp_path / "data")) == (len(answers), len(answers))
    assert "took over" in (tmp_path / "survivor.log").read_text()
    assert redis_client.xlen(KEYS.jobs("efficientnet-lite0")) == 0
    assert redis_client.xlen(KEYS.dead_letters) == 0


def test_redis_restart_under_load_gives_503s_no_hang_and_recovers_by_itself(
    model_dir: Path, tmp_path: Path
) -> None:
    server = RedisServer()
    try:
        server.start()
    except ServerUnavailable as error:
        unavailable(f"Redis: {error}")
    deadline_s = 2.5  # shorter than the outage: some callers' deadlines pass while it is down
    worker = spawn_worker(
        server.url, model_dir, tmp_path / "worker.log", predict_timeout_s=deadline_s
    )
    try:
        wait_for_workers(server.url, 1)
        with redis_service(server.url, tmp_path / "data", predict_timeout_s=deadline_s) as client:
            headers = login(client)
            load = Load(
                lambda: client.post("/model/predict", files=dog_files(), headers=headers),
                threads=4,
            )
            marks: dict[str, float] = {}

            def restart_redis() -> None:
                time.sleep(1.5)
                marks["down"] = time.monotonic()
                server.stop()
                time.sleep(4.0)
                server.start()  # the same port, empty: the jobs it held are gone
                marks["up"] = time.monotonic()
                time.sleep(6.0)

            answers = load.run_while(restart_redis)
            after = client.post("/model/predict", files=dog_files(), headers=headers)
    finally:
        stop_process(worker)
        server.stop()

    timeline = [(round(a.started - marks["up"], 2), a.status, a.body) for a in answers]
    statuses = load.statuses()
    assert set(statuses) <= {200, 503, 504}, timeline
    assert statuses.get(503, 0) >= 1, statuses
    for answer in answers:
        assert answer.seconds <= deadline_s + 2, answer
        if answer.status == 503:
            assert "unavailable" in answer.body["detail"]
        if answer.status == 504:
            assert "in time" in answer.body["detail"]
    before = [a for a in answers if a.started + a.seconds < marks["down"]]
    assert before
    assert {a.status for a in before} == {200}
    # Back to normal within a second of Redis: every request started after that is served.
    settled = [a for a in answers if a.started > marks["up"] + 1.0]
    assert settled
    assert {a.status for a in settled} == {200}, [t for t in timeline if t[1] != 200]
    assert (after.status_code, after.json()["prediction"]) == (200, "Eskimo_dog")
    assert worker.returncode in (None, 0)


def test_postgres_restart_fails_clearly_never_hangs_and_leaves_no_half_rows(
    model_dir: Path, tmp_path: Path
) -> None:
    server = PostgresServer()
    try:
        server.start()
    except ServerUnavailable as error:
        unavailable(f"PostgreSQL: {error}")
    try:
        database_url = server.create_database("faults")
        settings = Settings(
            database_url=database_url,
            data_dir=tmp_path / "data",
            model_dir=model_dir,
            model_threads=1,
            cache=False,
        )
        with TestClient(create_service_app(settings)) as client:
            headers = login(client)
            load = Load(
                lambda: client.post("/model/predict", files=dog_files(), headers=headers),
                threads=4,
            )
            marks: dict[str, float] = {}

            def restart_postgres() -> None:
                time.sleep(1.5)
                marks["down"] = time.monotonic()
                server.halt()
                time.sleep(2.5)
                server.resume()
                marks["up"] = time.monotonic()
                time.sleep(3.0)

            answers = load.run_while(restart_postgres)
            after = client.post("/model/predict", files=dog_files(), headers=headers)
        rows = count_predictions(database_url)
    finally:
        server.stop()

    statuses = load.statuses()
    assert set(statuses) <= {200, 503}, [a.body for a in answers if a.status not in (200, 503)]
    assert statuses.get(503, 0) >= 1, statuses
    for answer in answers:
        assert answer.seconds < 10, answer
        if answer.status == 503:
            assert "database" in answer.body["detail"].lower(), answer.body
    settled = [a for a in answers if a.started > marks["up"] + 1.0]
    assert settled
    assert {a.status for a in settled} == {200}
    assert after.status_code == 200
    ok = statuses[200] + 1
    assert rows == (ok, ok), "every 200 is one complete row; no failed request left one"


@pytest.fixture
def embedded_client(model_dir: Path, tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    settings = Settings(
        data_dir=tmp_path / "data", model_dir=model_dir, model_threads=1, cache=False
    )
    with TestClient(create_service_app(settings)) as client:
        yield client, settings


def picture(colour: tuple[int, int, int]) -> dict[str, tuple[str, bytes, str]]:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return {"file": ("flat.png", buffer.getvalue(), "image/png")}


def assert_no_partial_files(upload_dir: Path) -> None:
    if not upload_dir.is_dir():
        return
    for path in upload_dir.iterdir():
        assert re.fullmatch(r"[0-9a-f]{32}\.[a-z]+", path.name), path.name
        digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        assert path.name.startswith(digest), "a stored upload is not what was sent"


def test_an_upload_folder_that_is_not_a_folder_gives_507_and_stores_nothing(
    embedded_client: tuple[TestClient, Settings],
) -> None:
    client, settings = embedded_client
    headers = login(client)
    upload_dir = settings.upload_dir
    upload_dir.rmdir()
    upload_dir.write_bytes(b"not a folder")

    refused = client.post("/model/predict", files=dog_files(), headers=headers)
    assert refused.status_code == 507, refused.text
    assert refused.json()["detail"].startswith("Insufficient storage")
    assert str(settings.data_dir) not in refused.json()["detail"]  # no server paths shown
    assert client.get("/model/predictions", headers=headers).json() == []

    upload_dir.unlink()
    upload_dir.mkdir()
    served = client.post("/model/predict", files=dog_files(), headers=headers)
    assert served.status_code == 200
    assert_no_partial_files(upload_dir)


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted on ``path`` (root with CAP_SYS_ADMIN only)."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_gives_507_and_leaves_no_partial_file(
    embedded_client: tuple[TestClient, Settings],
) -> None:
    client, settings = embedded_client
    headers = login(client)
    upload_dir = settings.upload_dir
    with tiny_filesystem(upload_dir, "12k"):
        small = client.post("/model/predict", files=picture((200, 30, 30)), headers=headers)
        assert small.status_code == 200  # a small picture still fits
        full = client.post("/model/predict", files=dog_files(), headers=headers)
        assert full.status_code == 507, full.text
        assert "No space left on device" in full.json()["detail"]
        assert_no_partial_files(upload_dir)
        assert len(list(upload_dir.iterdir())) == 1

        subprocess.run(["mount", "-o", "remount,ro", str(upload_dir)], check=True)
        read_only = client.post("/model/predict", files=picture((30, 200, 30)), headers=headers)
        assert read_only.status_code == 507, read_only.text
        assert "Read-only file system" in read_only.json()["detail"]
    history = client.get("/model/predictions", headers=headers).json()
    assert [p["id"] for p in history] == [small.json()["prediction_id"]]


def test_api_killed_with_jobs_in_flight_old_answers_reach_no_new_caller(
    redis_url: str,
    redis_client: redis.Redis,
    model_dir: Path,
    tmp_path: Path,
    api_processes: list[ApiProcess],
) -> None:
    settings = {
        "queue_url": redis_url,
        "data_dir": tmp_path / "data",
        "cache": "false",
        "predict_timeout_s": 30,
        "model_dir": model_dir,  # no worker yet: the API knows the model from the repository
    }
    first = ApiProcess(tmp_path / "api-1.log", **settings)
    api_processes.append(first)
    with first.client() as client:
        headers = login(client)
        job_id = client.post("/model/jobs", files=dog_files(), headers=headers).json()["job_id"]
    # Three callers wait for red squares; no worker runs yet, so their jobs sit in Redis.
    waiting = Load(
        lambda: httpx.post(
            f"{first.url}/model/predict", files=picture((220, 20, 20)), headers=headers, timeout=60
        ),
        threads=3,
    )

    def kill_the_api_with_jobs_queued() -> None:
        wait_until(
            lambda: redis_client.xlen(KEYS.jobs("efficientnet-lite0")) >= 4, 30, "jobs never queued"
        )
        first.kill()

    dropped = waiting.run_while(kill_the_api_with_jobs_queued)
    assert {a.status for a in dropped} == {0}, "a caller of the killed process got an answer"

    second = ApiProcess(tmp_path / "api-2.log", **settings)
    api_processes.append(second)
    worker = spawn_worker(redis_url, model_dir, tmp_path / "worker.log", predict_timeout_s=30)
    try:
        with second.client() as client:
            answers = [
                client.post("/model/predict", files=dog_files(), headers=headers) for _ in range(4)
            ]
            job = client.get(f"/model/jobs/{job_id}", headers=headers).json()
            wait_until(
                lambda: (
                    client.get(f"/model/jobs/{job_id}", headers=headers).json()["status"] == "done"
                ),
                30,
                "the async job queued before the restart never finished",
            )
            job = client.get(f"/model/jobs/{job_id}", headers=headers).json()
            history = client.get("/model/predictions?limit=100", headers=headers).json()
    finally:
        stop_process(worker)

    # The new process's callers get their own answers, never the red squares of the old one.
    assert [a.status_code for a in answers] == [200] * 4
    assert {a.json()["prediction"] for a in answers} == {"Eskimo_dog"}
    assert {a.json()["image_file_name"] for a in answers} == {f"{DOG_MD5}.jpeg"}
    # The async job's answer was stored and stays readable through any API process.
    assert (job["status"], job["prediction"]) == ("done", "Eskimo_dog")
    # The old callers' answers went to the old process's reply stream, where nobody reads.
    streams = sorted(k.decode() for k in redis_client.scan_iter(KEYS.replies("*")))
    old_answers = sum(redis_client.xlen(s) for s in streams)
    assert old_answers >= 3, streams
    recorded = {p["id"] for p in history}
    assert {a.json()["prediction_id"] for a in answers} <= recorded


def test_sigterm_records_the_async_jobs_answered_in_time_and_fails_the_rest_for_good(
    redis_url: str,
    redis_client: redis.Redis,
    model_dir: Path,
    tmp_path: Path,
    api_processes: list[ApiProcess],
) -> None:
    settings = {
        "queue_url": redis_url,
        "data_dir": tmp_path / "data",
        "cache": "false",
        "predict_timeout_s": 60,
        "model_dir": model_dir,
    }
    worker = spawn_worker(redis_url, model_dir, tmp_path / "worker.log", predict_timeout_s=60)
    try:
        wait_for_workers(redis_url, 1)

        def queue_a_job_and_stop_the_api(resume_the_worker_after_s: float | None) -> str:
            """A job queued while the worker holds still, then SIGTERM to its API process."""
            api = ApiProcess(tmp_path / f"api-{len(api_processes)}.log", **settings)
            api_processes.append(api)
            with api.client() as client:
                headers = login(client)
                worker.send_signal(signal.SIGSTOP)
                job = client.post("/model/jobs", files=dog_files(), headers=headers)
            assert job.status_code == 202, job.text
            api.process.send_signal(signal.SIGTERM)
            if resume_the_worker_after_s is not None:  # while the API is shutting down
                time.sleep(resume_the_worker_after_s)
                worker.send_signal(signal.SIGCONT)
            # uvicorn shuts down, then raises the signal again for its exit status.
            assert api.process.wait(30) == -signal.SIGTERM
            worker.send_signal(signal.SIGCONT)  # answers now go to a process that is gone
            wait_until(
                lambda: redis_client.xlen(KEYS.jobs("efficientnet-lite0")) == 0,
                30,
                "the worker never answered the job",
            )
            return str(job.json()["job_id"])

        # Answered a second into the shutdown: the process waits for it and records it.
        answered_in_time = queue_a_job_and_stop_the_api(resume_the_worker_after_s=1.0)
        # Answered only after the process has exited: nobody records it, so it must not read
        # "done" (it did: the worker's late answer replaced the failure the API had stored).
        answered_late = queue_a_job_and_stop_the_api(resume_the_worker_after_s=None)

        reader = ApiProcess(tmp_path / "api-reader.log", **settings)
        api_processes.append(reader)
        with reader.client() as client:
            headers = login(client)
            recorded = client.get(f"/model/jobs/{answered_in_time}", headers=headers).json()
            failed = client.get(f"/model/jobs/{answered_late}", headers=headers).json()
            history = client.get("/model/predictions", headers=headers).json()
    finally:
        worker.send_signal(signal.SIGCONT)
        stop_process(worker)

    assert (recorded["status"], recorded["prediction"]) == ("done", "Eskimo_dog")
    assert [p["label"] for p in history] == ["Eskimo_dog"]  # that one only
    assert failed["status"] == "failed", failed
    assert "restarted before the image was classified" in failed["error"]


def test_a_worker_recycles_after_its_job_limit_without_losing_work(
    redis_url: str, redis_client: redis.Redis, model_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    group = spawn_worker(
        redis_url,
        model_dir,
        log,
        "--processes",
        "1",
        worker_max_jobs=5,
        worker_heartbeat_s=0.3,
        predict_timeout_s=20,
    )
    try:
        wait_for_workers(redis_url, 1)
        with redis_service(redis_url, tmp_path / "data", predict_timeout_s=20) as client:
            headers = login(client)
            load = Load(
                lambda: client.post("/model/predict", files=dog_files(), headers=headers),
                threads=3,
            )
            load.run_while(lambda: wait_until(lambda: len(load.answers) >= 30, 120, "too slow"))
    finally:
        assert stop_process(group) == 0

    answers = load.answers
    assert load.statuses() == {200: len(answers)}
    assert count_predictions(sqlite_url(tmp_path / "data")) == (len(answers), len(answers))
    text = log.read_text()
    assert re.search(r"\d+ jobs done, recycling", text)
    assert "starting a fresh worker in this process" in text
    consumers = set(re.findall(r"worker (\S+) ready with", text))
    assert len(consumers) >= 2, text
    assert redis_client.xlen(KEYS.dead_letters) == 0
