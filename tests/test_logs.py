"""One request followed end to end: its id in the answer, in the API's log and in the log of the
worker that computed it, with real processes (``imgclf serve``, Redis, ``imgclf worker``)."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx

from imgclf.logs import accepted_request_id
from tests.support import DOG_JPEG, ServedApi, start_worker, stop_process, wait_for_workers

HOSTILE_IDS = [
    "x" * 200,
    'evil" request_id="admin',
    '{"level": "CRITICAL", "message": "forged"}',
    "two words",
]


def sign_up(url: str) -> dict[str, str]:
    account = {"name": "Followed", "email": "followed@example.com", "password": "correct horse"}
    assert httpx.post(f"{url}/user/", json=account).status_code == 201
    login = {"username": account["email"], "password": account["password"]}
    token = httpx.post(f"{url}/login", data=login).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def predict(url: str, headers: dict[str, str]) -> httpx.Response:
    files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
    return httpx.post(f"{url}/model/predict", files=files, headers=headers, timeout=60)


def json_records(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of a log (the start-up banner is plain text)."""
    records = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def about(records: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    return [
        record
        for record in records
        if record.get("request_id") == request_id or request_id in record.get("request_ids", [])
    ]


def test_sane_ids_are_kept_and_others_replaced() -> None:
    assert accepted_request_id("test-1a2b_3.c:4") == "test-1a2b_3.c:4"
    for offered in [*HOSTILE_IDS, "", None, "line\nbreak", "é"]:
        replaced = accepted_request_id(offered)
        assert replaced != offered
        assert len(replaced) == 32
        assert set(replaced) <= set("0123456789abcdef")


def test_a_request_is_followed_from_the_api_through_redis_to_the_worker(
    redis_url: str, model_dir: Path, tmp_path: Path
) -> None:
    worker_log = tmp_path / "worker.log"
    worker = start_worker(redis_url, model_dir, worker_log, log_format="json")
    request_id = f"test-{uuid.uuid4().hex}"
    try:
        with ServedApi(
            tmp_path / "api.log",
            tmp_path / "data",
            queue_url=redis_url,
            log_format="json",
            access_log=True,
        ) as api:
            wait_for_workers(redis_url, 1)
            answer = predict(api.url, {**sign_up(api.url), "X-Request-ID": request_id})
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-Request-ID"] == request_id
    finally:
        stop_process(worker)

    api_lines = about(json_records(api.log), request_id)
    assert [(r["logger"], r["level"]) for r in api_lines] == [("imgclf.access", "INFO")]
    assert api_lines[0]["message"].startswith("POST /model/predict 200 ")
    assert {"time", "level", "logger", "message"} <= api_lines[0].keys()
    worker_lines = about(json_records(worker_log), request_id)
    assert [r["logger"] for r in worker_lines] == ["imgclf.worker.batching"]
    assert worker_lines[0]["message"].startswith("batch of 1: job ")
    assert f"(request {request_id})" in worker_lines[0]["message"]


def test_embedded_text_logs_name_the_request_and_hostile_ids_never_reach_them(
    model_dir: Path, tmp_path: Path
) -> None:
    request_id = f"test-{uuid.uuid4().hex}"
    with ServedApi(  # text logs, the default
        tmp_path / "api.log",
        tmp_path / "data",
        model_dir=model_dir,
        model_threads=1,
        access_log=True,
    ) as api:
        auth = sign_up(api.url)
        answer = predict(api.url, {**auth, "X-Request-ID": request_id})
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Request-ID"] == request_id
        replaced = []
        for hostile in HOSTILE_IDS:
            refused = httpx.get(f"{api.url}/no/such/page", headers={"X-Request-ID": hostile})
            assert refused.status_code == 404
            assert refused.headers["X-Request-ID"] != hostile
            replaced.append(refused.headers["X-Request-ID"])
        # A header folded over two lines (obsolete syntax) cannot start a log line either.
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as raw:
            raw.sendall(
                b"GET /health/live HTTP/1.1\r\nHost: x\r\n"
                b"X-Request-ID: folded\r\n 2026-01-01 imgclf.api CRITICAL forged\r\n"
                b"Connection: close\r\n\r\n"
            )
            head = raw.recv(65536).decode(errors="replace")
        assert "forged" not in head
        # Nor can a request path whose escapes decode to a line break and a terminal's codes.
        forging = "/x%0a2026-12-01%2016:36:00,000%20imgclf.auth%20INFO%20admin%20login%20ok%1b[31m"
        assert httpx.get(f"{api.url}{forging}").status_code == 404

    forged = [line for line in api.output().splitlines() if "admin login ok" in line]
    assert len(forged) == 1
    assert " imgclf.access INFO GET /x\\x0a2026-12-01 16:36:00,000 imgclf.auth " in forged[0]
    assert " login ok\\x1b[31m 404 " in forged[0]
    assert "\x1b" not in api.output()

    lines = api.output().splitlines()
    about_it = [line for line in lines if line.endswith(f" request_id={request_id}")]
    assert len(about_it) == 2
    assert " imgclf.worker.batching INFO batch of 1: job " in about_it[0]
    assert f"(request {request_id})" in about_it[0]
    assert " imgclf.access INFO POST /model/predict 200 " in about_it[1]
    for hostile, new_id in zip(HOSTILE_IDS, replaced, strict=True):
        assert hostile not in api.output()
        assert any("GET /no/such/page 404" in line and new_id in line for line in lines)
    assert not any("forged" in line for line in lines)
