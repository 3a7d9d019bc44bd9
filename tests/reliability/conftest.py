"""Helpers for the fault tests: worker processes with their own logs, load that records every
answer, a real API process, and PostgreSQL stopped and started again on its data."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from imgclf.db.models import Prediction
from imgclf.launcher import environment, imgclf_command
from imgclf.localservers import free_port, wait_for_port
from tests.support import DOG_JPEG


def spawn_worker(
    redis_url: str, model_dir: Path, log: Path, *args: str, **settings: object
) -> subprocess.Popen[bytes]:
    """``python -m imgclf.worker`` (or ``imgclf worker ARGS`` when args are given), logging to
    ``log`` so a test can read what it did."""
    defaults = {"model_threads": 1, "worker_concurrency": 1, "worker_heartbeat_s": 0.5}
    env = environment({**defaults, "queue_url": redis_url, "model_dir": model_dir, **settings})
    command = (
        [*imgclf_command(), "worker", *args] if args else [sys.executable, "-m", "imgclf.worker"]
    )
    with log.open("ab") as output:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


@dataclass
class Answer:
    status: int  # 0: no HTTP answer at all (connection dropped)
    seconds: float
    body: dict[str, Any]
    started: float


@dataclass
class Load:
    """Requests sent from a few threads until stopped; every answer is kept."""

    send: Callable[[], httpx.Response]
    threads: int = 6
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = self.send()
                status, body = response.status_code, response.json()
            except (httpx.HTTPError, OSError) as error:
                status, body = 0, {"detail": repr(error)}
            with self._lock:
                self.answers.append(Answer(status, time.monotonic() - started, body, started))

    def run_while(self, scenario: Callable[[], None]) -> list[Answer]:
        with ThreadPoolExecutor(self.threads) as pool:
            loops = [pool.submit(self._loop) for _ in range(self.threads)]
            try:
                scenario()
            finally:
                self._stop.set()
            for loop in loops:
                loop.result()
        return self.answers

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for answer in self.answers:
            counts[answer.status] = counts.get(answer.status, 0) + 1
        return counts


def count_predictions(database_url: str) -> tuple[int, int]:
    """(rows, rows that are complete: a label, a score, five scored labels, a model)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(Prediction)).all()
            total = connection.scalar(select(func.count()).select_from(Prediction)) or 0
    finally:
        engine.dispose()
    complete = sum(
        1
        for row in rows
        if row.label and 0 <= row.score <= 1 and len(row.top_k) == 5 and row.model_id
    )
    return total, complete


def dog_files() -> dict[str, tuple[str, bytes, str]]:
    return {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}


class ApiProcess:
    """``uvicorn imgclf.serving:create_service_app`` as its own process on a free port."""

    def __init__(self, log: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = environment(settings)
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "imgclf.serving:create_service_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout_s=60, process=self.process)

    def client(self, timeout_s: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


@pytest.fixture
def api_processes() -> Iterator[list[ApiProcess]]:
    started: list[ApiProcess] = []
    yield started
    for api in started:
        api.kill()
