"""GET /, /health/live and /health/ready: what the probes and the locust index task see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

import imgclf
from imgclf.api.app import create_app
from imgclf.localservers import PostgresServer
from imgclf.settings import Settings


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Most checks here are about the queue's report: one database is enough for them."""
    return f"sqlite:///{tmp_path / 'health.db'}"


class StubQueue:
    """Stands in for a JobQueue: reports what a test tells it to, records start and close."""

    def __init__(self, report: dict[str, Any] | Exception, model_id: str | None) -> None:
        self.report = report
        self.model_id = model_id
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def close(self) -> None:
        self.calls.append("close")

    async def readiness(self) -> dict[str, Any]:
        if isinstance(self.report, Exception):
            raise self.report
        return self.report


def ready(settings: Settings, queue: StubQueue | None) -> tuple[int, dict[str, Any]]:
    with TestClient(create_app(settings, queue=queue)) as client:
        answer = client.get("/health/ready")
        return answer.status_code, answer.json()


def test_index_names_the_service(client: TestClient) -> None:
    answer = client.get("/")
    assert answer.status_code == 200
    assert answer.json() == {
        "service": "imgclf",
        "version": imgclf.__version__,
        "status": "ok",
        "docs": "/docs",
        "openapi": "/openapi.json",
    }
    assert client.get(answer.json()["docs"]).status_code == 200


def test_live_answers_while_the_process_runs(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}


def test_ready_when_database_queue_worker_and_model_are(settings: Settings) -> None:
    queue = StubQueue({"queue": "ok", "workers": 2, "model": "efficientnet-lite0"}, "lite0")
    assert ready(settings, queue) == (
        200,
        {
            "status": "ready",
            "checks": {
                "database": "ok",
                "queue": "ok",
                "workers": 2,
                "model": "efficientnet-lite0",
            },
        },
    )
    assert queue.calls == ["start", "close"]  # the lifespan owns the queue


@pytest.mark.parametrize(
    ("report", "model_id", "expected"),
    [
        (
            {"queue": "ok", "workers": 0, "model": "no worker has loaded a model"},
            None,
            {"queue": "ok", "workers": 0, "model": "no worker has loaded a model"},
        ),
        (
            {"queue": "ok", "workers": 1, "model": "not loaded"},
            None,
            {"queue": "ok", "workers": 1, "model": "not loaded"},
        ),
        (
            {"queue": "Redis unreachable: Connection refused", "workers": 0, "model": "unknown"},
            "lite0",
            {"queue": "Redis unreachable: Connection refused", "workers": 0, "model": "unknown"},
        ),
        (ConnectionError("boom at 10.0.0.5:6379"), None, {"queue": "unavailable", "workers": 0}),
    ],
)
def test_not_ready_shows_the_failing_checks_reason(
    settings: Settings,
    report: dict[str, Any] | Exception,
    model_id: str | None,
    expected: dict[str, Any],
) -> None:
    status, body = ready(settings, StubQueue(report, model_id))
    assert status == 503
    assert body == {"status": "not ready", "checks": {"database": "ok", **expected}}


def test_without_a_queue_the_api_is_not_ready(settings: Settings) -> None:
    status, body = ready(settings, None)
    assert status == 503
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["queue"] == "not configured"


def test_a_lost_database_makes_it_not_ready(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("health_lost_database")
    queue = StubQueue({"queue": "ok", "workers": 1, "model": "lite0"}, "lite0")
    with TestClient(create_app(Settings(database_url=url), queue=queue)) as client:
        assert client.get("/health/ready").status_code == 200
        with psycopg.connect(
            f"host=127.0.0.1 port={postgres_server.port} user=postgres dbname=postgres",
            autocommit=True,
        ) as connection:
            connection.execute('DROP DATABASE "health_lost_database" WITH (FORCE)')
        answer = client.get("/health/ready")
        assert answer.status_code == 503
        assert answer.json()["checks"]["database"] == "unavailable"
        assert client.get("/health/live").status_code == 200
