"""The real service for one stress configuration, started as bench/service.py starts it
(``imgclf.launcher.LocalStack``: ``imgclf serve``, and ``imgclf worker --processes N`` beside a
throwaway redis-server), with each process's log kept and its CPU read per process."""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from imgclf.launcher import LocalStack, http_get
from imgclf.localservers import PostgresServer

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


class Stack(LocalStack):
    """One configuration started for real, with a metrics token and, when asked, PostgreSQL;
    ``stack.pids``: the root process of each role (api, worker, redis, postgres) for CPU
    accounting."""

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
        self.metrics_token = secrets.token_urlsafe(24)
        self._postgres = PostgresServer() if postgres else None
        super().__init__(
            workers=config.workers if config.mode == "redis" else 0,
            redis_url=redis_url,
            log_dir=log_dir,
            ready_timeout_s=ready_timeout_s,
            env="development",
            model_dir=model_dir.resolve(),  # the processes run in the data folder
            cache=config.cache,
            max_batch_size=config.max_batch_size,
            # Every Locust user signs up and logs in from this one address, many at once.
            signup_max_per_address=1_000_000,
            login_max_per_email=1_000_000,  # --login admin: every user is the admin
            password_checks_per_address=1000,
            password_checks_waiting=1000,
            metrics_token=self.metrics_token,
        )

    def start(self) -> Stack:
        if self._postgres is not None:
            self._postgres.start()
            self.settings["database_url"] = self._postgres.create_database("imgclf")
            pid_file = self._postgres.data / "postmaster.pid"
            self.pids["postgres"] = int(pid_file.read_text().split()[0])
        super().start()
        return self

    def metrics_text(self) -> str:
        scraper = {"Authorization": f"Bearer {self.metrics_token}"}
        status, body = http_get(f"{self.url}/metrics", timeout_s=10, headers=scraper)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body.decode()

    def stop(self) -> None:
        super().stop()
        if self._postgres is not None:
            self._postgres.stop()
