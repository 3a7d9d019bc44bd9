"""The real service for one stress configuration, started as bench/service.py starts it
(``imgclf serve``, and ``imgclf worker --processes N`` beside a throwaway redis-server), but
each process in its own process group with its logs kept, so that everything it started is
stopped on Ctrl-C or failure and its CPU can be read per process."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from imgclf.localservers import PostgresServer, RedisServer, free_port, wait_for_port

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class StackConfig:
    """One configuration of the matrix: the embedded mode, or Redis with N worker processes."""

    mode: str  # "embedded" or "redis"
    workers: int = 0
    max_batch_size: int = 16
    cache: bool = False

    @property
    def name(self) -> str:
        where = "embedded" if self.mode == "embedded" else f"redis, {self.workers} worker"
        where += "s" if self.workers > 1 else ""
        return f"{where}, batch {self.max_batch_size}" + (", cache on" if self.cache else "")

    @property
    def slug(self) -> str:
        where = "embedded" if self.mode == "embedded" else f"redis-{self.workers}w"
        return f"{where}-b{self.max_batch_size}" + ("-cache" if self.cache else "")


def http_get(
    url: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def has_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the process has ended, without reaping it: while its zombie stands, its pid,
    and so its process group's id, cannot be given to anyone else's process."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM to the process's group (it leads a session of its own), SIGKILL to whatever of
    the group is left after it exits or ``timeout_s`` passes, then reap it."""
    if process.returncode is not None:
        return  # reaped already: its group id may belong to someone else by now
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while not has_exited(process) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class Stack:
    """Start with ``with Stack(...) as stack``; ``stack.url`` is the API, ``stack.pids`` the
    root process of each role (api, worker, redis, postgres) for CPU accounting."""

    def __init__(
        self,
        config: StackConfig,
        model_dir: Path,
        log_dir: Path,
        *,
        redis_url: str | None = None,
        postgres: bool = False,
        ready_timeout_s: float = 120.0,
    ) -> None:
        self.config = config
        self.model_dir = model_dir.resolve()  # the processes run in the data folder
        self.log_dir = log_dir
        self.external_redis_url = redis_url
        self.use_postgres = postgres
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_token = secrets.token_urlsafe(24)
        self.pids: dict[str, int] = {}
        self.env: dict[str, str] = {}
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._redis: RedisServer | None = None
        self._postgres: PostgresServer | None = None
        self._data_dir: tempfile.TemporaryDirectory[str] | None = None

    def _environment(self, data_dir: str) -> dict[str, str]:
        env = {
            **os.environ,
            "IMGCLF_ENV": "development",
            "IMGCLF_DATA_DIR": data_dir,
            "IMGCLF_MODEL_DIR": str(self.model_dir),
            "IMGCLF_PORT": str(self.port),
            "IMGCLF_CACHE": str(self.config.cache).lower(),
            "IMGCLF_ACCESS_LOG": "false",
            "IMGCLF_MAX_BATCH_SIZE": str(self.config.max_batch_size),
            # Every Locust user signs up and logs in from this one address, many at once.
            "IMGCLF_SIGNUP_MAX_PER_ADDRESS": "1000000",
            "IMGCLF_PASSWORD_CHECKS_PER_ADDRESS": "1000",
            "IMGCLF_PASSWORD_CHECKS_WAITING": "1000",
            "IMGCLF_METRICS_TOKEN": self.metrics_token,
        }
        # The matrix decides these; a developer's own database or queue is never touched.
        env.pop("IMGCLF_QUEUE_URL", None)
        env.pop("IMGCLF_DATABASE_URL", None)
        return env

    def _spawn(self, role: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{role}.log").open("ab")
        self._logs.append(log)
        process = subprocess.Popen(
            [str(BIN / "imgclf"), *args],
            env=self.env,
            cwd=self.env["IMGCLF_DATA_DIR"],  # no developer's .env file leaks in
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._processes.append(process)
        self.pids[role] = process.pid
        return process

    def start(self) -> Stack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._data_dir = tempfile.TemporaryDirectory(prefix="imgclf-stress-")
        self.env = self._environment(self._data_dir.name)
        if self.use_postgres:
            self._postgres = PostgresServer().start()
            self.env["IMGCLF_DATABASE_URL"] = self._postgres.create_database("imgclf")
            pid_file = self._postgres.data / "postmaster.pid"
            self.pids["postgres"] = int(pid_file.read_text().split()[0])
        if self.config.mode == "redis":
            queue_url = self.external_redis_url
            if queue_url is None:
                self._redis = RedisServer().start()
                queue_url = self._redis.url
                assert self._redis.process is not None
                self.pids["redis"] = self._redis.process.pid
            self.env["IMGCLF_QUEUE_URL"] = queue_url
        api = self._spawn("api", ["serve"])
        if self.config.mode == "redis":
            self._spawn("worker", ["worker", "--processes", str(self.config.workers)])
        wait_for_port(self.port, self.ready_timeout_s, api)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Ready, and every worker process alive (ready needs only one)."""
        wanted = max(1, self.config.workers)
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            status, body = http_get(f"{self.url}/health/ready")
            if status == 200 and json.loads(body)["checks"].get("workers", 0) >= wanted:
                return
            for process in self._processes:
                if has_exited(process):
                    raise RuntimeError(f"{process.args} exited early; see {self.log_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.config.name} not ready: {body[:300]!r}")
            time.sleep(0.25)

    def metrics_text(self) -> str:
        scraper = {"Authorization": f"Bearer {self.metrics_token}"}
        status, body = http_get(f"{self.url}/metrics", timeout_s=10, headers=scraper)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body.decode()

    def stop(self) -> None:
        for process in reversed(self._processes):  # workers, then the API
            stop_group(process)
        for log in self._logs:
            log.close()
        if self._redis is not None:
            self._redis.stop()
        if self._postgres is not None:
            self._postgres.stop()
        if self._data_dir is not None:
            self._data_dir.cleanup()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: Any) -> None:
        self.stop()
