"""All settings in one place: `IMGCLF_` environment variables or a `.env` file."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# OWASP's least Argon2id configuration: 2 passes over 19 MiB.
MIN_PRODUCTION_HASH_TIME_COST = 2
MIN_PRODUCTION_HASH_MEMORY_KIB = 19 * 1024
DEFAULT_SECRET_KEY = "change-me-development-only-not-a-secret"  # noqa: S105 - refused in production
DEFAULT_ADMIN_PASSWORD = "admin"  # noqa: S105 - refused in production
# Refuses keys such as "aaaa…" or "passwordpassword…". Random keys pass: of a million keys of
# 32 hex digits (the poorest alphabet in use), none held fewer than 8 different characters
# (91 held fewer than 10); token_urlsafe keys hold 16 or more.
MIN_SECRET_KEY_DISTINCT_CHARACTERS = 8


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class SettingsError(ValueError):
    """A setting that makes the service unsafe or unable to start; the message names the fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IMGCLF_", env_file=".env", extra="ignore", validate_default=True
    )

    env: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=1, ge=1, description="uvicorn worker processes")
    access_log: bool = True
    # POST /model/predict answers with a Server-Timing header (api/predictions/timing.py). Off
    # by default: how long storing an upload took tells whether anyone had sent that picture.
    server_timing: bool = False
    log_format: LogFormat = LogFormat.TEXT
    # OpenTelemetry traces by OTLP/HTTP (the ``tracing`` extra; OTEL_EXPORTER_OTLP_* say where).
    tracing: bool = False
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="request line and headers; 431 beyond"
    )
    max_url_bytes: int = Field(default=8 * 1024, ge=256, description="414 beyond")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a request head must arrive within this; 408 beyond"
    )
    body_pause_s: float = Field(
        default=30.0, gt=0, description="the longest wait for a request body's next piece"
    )
    send_pause_s: float = Field(
        default=30.0, gt=0, description="the longest a client may leave its answer unread"
    )
    body_min_rate_kib_s: float = Field(
        default=16.0,
        gt=0,
        description="a body must end within body_pause_s, plus a second per this many KiB",
    )
    data_dir: Path = Path("./data")
    database_url: str = ""
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)

    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    access_token_minutes: float = Field(default=30, gt=0)
    session_days: float = Field(
        default=7, gt=0, description="how long a login's refresh token renews access tokens"
    )
    admin_email: str = "admin@example.com"
    admin_name: str = "Admin"
    admin_password: SecretStr = SecretStr(DEFAULT_ADMIN_PASSWORD)
    # Argon2id's cost per password hash: argon2-cffi's defaults, RFC 9106's second choice (3
    # passes over 64 MiB, about 0.15 s of a core here). Production refuses less than OWASP's
    # floor; the tests run far cheaper, as the time of a hash is not what they check.
    password_hash_time_cost: int = Field(default=3, ge=1, le=16)
    password_hash_memory_kib: int = Field(default=65536, ge=64, le=2**20)
    login_max_failures_per_email: int = Field(
        default=5,
        ge=1,
        description="per email from the clients that have not logged in to it lately, per "
        "email from those that have, and per email from each client",
    )
    login_max_failures_per_address: int = Field(default=50, ge=1)
    login_max_per_email: int = Field(
        default=60,
        ge=1,
        description="logins, failed or not, per email from one client address: each is a "
        "password check, and a client that knows the password could otherwise repeat it",
    )
    login_failure_window_s: int = Field(default=15 * 60, ge=1)
    login_known_client_days: int = Field(
        default=30,
        ge=1,
        description="how long a client an account logged in from is spared the failures "
        "that strangers sent for the account",
    )
    signup_max_per_address: int = Field(default=10, ge=1)
    signup_window_s: int = Field(default=60 * 60, ge=1)
    password_checks_waiting: int = Field(
        default=16, ge=0, description="Argon2 checks that may wait for a core, per process"
    )
    password_checks_per_address: int = Field(
        default=4, ge=1, description="Argon2 checks one client address may run at once"
    )
    trusted_proxies: list[str] = Field(
        default=[], description="peers whose X-Forwarded-For names the client; none by default"
    )
    cors_origins: list[str] = []
    metrics_token: SecretStr = SecretStr("")

    model_dir: Path | None = Field(
        default=None, description="one bundle folder to serve alone, instead of the repository"
    )
    model_repository: Path | None = Field(
        default=None, description="folder of <name>/<version>/ bundles; default <data>/models"
    )
    default_model: str = Field(
        default="efficientnet-lite0", description="the model a request without ?model= gets"
    )
    model_threads: int = Field(default=0, ge=0, description="0: one per CPU core")
    # Off by default: in an open loop at 50 and 88 requests/s (2 cores, 3 rounds), spinning
    # raised the p99 from 19 to 33 ms and from 39 to 76 ms, since a call whose threads spin
    # holds both cores while the next request waits to be parsed and decoded. A lone request
    # gained 0-3.5 ms in the runs that measured it.
    model_spinning: bool = Field(
        default=False,
        description="ONNX Runtime's threads busy-wait between the layers of a call that has the "
        "cores to itself, instead of sleeping (never after the call)",
    )
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    max_decoded_bytes: int = Field(
        default=200_000_000, ge=1, description="the largest buffer decoding an upload may fill"
    )
    max_jpeg_scans: int = Field(default=100, ge=1, description="progressive JPEGs have about 10")
    decode_timeout_s: float = Field(
        default=5.0, gt=0, description="a worker gives up decoding an image after this long"
    )
    user_storage_quota_mb: int = Field(
        default=1024, ge=1, description="distinct uploads stored per user; 507 beyond"
    )
    user_feedback_quota_mb: int = Field(
        default=16, ge=1, description="feedback notes stored per user (UTF-8 bytes); 507 beyond"
    )
    history_keep: int = Field(
        default=100_000,
        ge=1,
        description="predictions kept per user; older ones go, with their feedback, at the "
        "next sweep (api.predictions.retention)",
    )
    history_sweep_s: float = Field(
        default=60.0,
        gt=0,
        description="how often each API process prunes the history of the users answered since",
    )
    top_k: int = Field(default=5, ge=1, le=100)

    queue_url: str = ""
    # 8, not 16: on a CPU a batch costs its images' time, whatever its size, and all its
    # answers wait for its last one; at saturation (2 cores, 32 clients) 8 served 0.93-1.00 of
    # what 16 did, with p99/p50 1.1-1.3 instead of 1.4-2.0 (docs/benchmarks.md).
    max_batch_size: int = Field(default=8, ge=1, le=256)
    max_batch_wait_ms: float = Field(default=0.0, ge=0)
    max_pending: int = Field(default=256, ge=1, description="jobs awaited per API process")
    max_pending_per_user: int = Field(
        default=64,
        ge=1,
        description="uploads one user may have waiting per API process (requests and async "
        "jobs); 429 beyond, so that one account cannot fill the queue for everyone",
    )
    max_pending_bytes: int = Field(
        default=256 * 2**20, ge=1, description="upload bytes in flight per API process"
    )
    max_pending_bytes_per_user: int = Field(
        default=64 * 2**20,
        ge=1,
        description="of those, what one user's uploads may hold (429 beyond)",
    )
    queue_max_length: int = Field(default=1024, ge=1, description="jobs waiting in Redis")
    queue_max_bytes: int = Field(
        default=256 * 2**20,
        ge=1,
        description="bytes of images waiting in Redis; at most half its maxmemory is used",
    )
    queue_max_deliveries: int = Field(default=3, ge=1, description="then dead-lettered")
    shadow_max_in_flight: int = Field(
        default=8, ge=1, description="shadow copies awaited at once per API process; then dropped"
    )
    shadow_max_waiting: int = Field(
        default=2,
        ge=0,
        description="a shadow copy is made only while at most this many callers of the live "
        "model and the candidate wait for answers in this process, and at most this many jobs "
        "wait for a worker: the workers have room",
    )
    shadow_max_busy: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="a shadow copy is made only while the workers spent at most this share of "
        "their time on batches lately (embedded: the last half second; Redis: since their "
        "previous heartbeat)",
    )
    predict_timeout_s: float = Field(default=10.0, gt=0)
    model_timeouts_s: dict[str, float] = Field(
        default={}, description="a model's own request timeout, by name (a slower model's)"
    )
    worker_concurrency: int = Field(
        default=0,
        ge=0,
        description="batches a worker runs at once, each decoded and classified in a thread of "
        "its own; 0: one per core",
    )
    worker_heartbeat_s: float = Field(default=2.0, gt=0)
    promote_timeout_s: float = Field(
        default=120.0, gt=0, description="how long a promotion waits for workers to load"
    )
    worker_models: list[str] = Field(
        default=[], description="the models a Redis worker serves; none named: all"
    )
    worker_max_jobs: int = Field(
        default=0, ge=0, description="restart a worker after N jobs; 0: never"
    )
    worker_max_rss_mb: int = Field(default=0, ge=0, description="restart above this RSS; 0: never")
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="export a worker's Prometheus metrics on this port (with --processes N, "
        "N ports from it); 0: off",
    )
    worker_metrics_host: str = "127.0.0.1"
    cache: bool = True
    cache_size: int = Field(default=4096, ge=1)
    cache_ttl_s: int = Field(default=24 * 3600, ge=1)

    redis_server: str = Field(
        default="", description="redis-server binary for `imgclf up --redis` and the tests"
    )
    pg_bin: str = Field(default="", description="PostgreSQL bin folder for the tests")

    api_url: str = "http://127.0.0.1:8000"
    ui_port: int = Field(default=8501, ge=1, le=65535)
    ui_max_pages_per_client: int = Field(
        default=32,
        ge=1,
        description="pages one client (an IPv4 address, an IPv6 /64) may keep open on the UI",
    )

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'imgclf.db').resolve()}"

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir or self.data_dir / "models" / "efficientnet-lite0"

    @property
    def resolved_model_repository(self) -> Path:
        return self.model_repository or self.data_dir / "models"

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def visibility_timeout_s(self) -> float:
        """How long a job sits idle before another worker may take it over, once its own
        worker's heartbeat has lapsed too: inside the caller's deadline, so a worker killed
        mid-batch costs a delay, not a 504."""
        return min(30.0, max(1.0, self.predict_timeout_s / 4))

    def timeout_for(self, model: str) -> float:
        """How long a request for ``model`` (a name) waits for its answer."""
        return self.model_timeouts_s.get(model, self.predict_timeout_s)

    @property
    def worker_heartbeat_ttl_s(self) -> float:
        """How long a worker's heartbeat stands: three beats, so one late beat (a long batch,
        a pause of the machine) does not make a live worker look gone."""
        return self.worker_heartbeat_s * 3

    @property
    def longest_timeout_s(self) -> float:
        """The longest any job may wait: a version is kept at least this long after it stops
        being live."""
        return max([self.predict_timeout_s, *self.model_timeouts_s.values()])

    @property
    def resolved_worker_concurrency(self) -> int:
        return self.worker_concurrency or os.cpu_count() or 1

    @property
    def resolved_model_threads(self) -> int:
        return self.model_threads or os.cpu_count() or 1

    def worker_share_environment(self, processes: int) -> dict[str, str]:
        """The environment that gives each of ``processes`` workers on this machine its share of
        the cores (model threads and lanes), where these settings leave them to the default."""
        share = str(max(1, (os.cpu_count() or 1) // processes))
        env = {}
        if not self.model_threads:
            env["IMGCLF_MODEL_THREADS"] = share
        if not self.worker_concurrency:
            env["IMGCLF_WORKER_CONCURRENCY"] = share
        return env

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if not self.is_production:
            return self
        if self.secret_key.get_secret_value() == DEFAULT_SECRET_KEY:
            raise SettingsError(
                "IMGCLF_SECRET_KEY is the development default; set it to a long random value "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`) "
                "before running with IMGCLF_ENV=production"
            )
        if len(self.secret_key.get_secret_value()) < 32:
            raise SettingsError("IMGCLF_SECRET_KEY must be at least 32 characters in production")
        if len(set(self.secret_key.get_secret_value())) < MIN_SECRET_KEY_DISTINCT_CHARACTERS:
            # Length alone lets "aaaa…" through; a random key of 32+ characters has far more.
            raise SettingsError(
                f"IMGCLF_SECRET_KEY must hold at least {MIN_SECRET_KEY_DISTINCT_CHARACTERS} "
                "different characters in production; use a random value "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        if self.admin_password.get_secret_value() == DEFAULT_ADMIN_PASSWORD:
            raise SettingsError(
                "IMGCLF_ADMIN_PASSWORD is the development default 'admin'; "
                "set a strong password before running with IMGCLF_ENV=production"
            )
        if len(self.admin_password.get_secret_value()) < 12:
            raise SettingsError(
                "IMGCLF_ADMIN_PASSWORD must be at least 12 characters in production"
            )
        if (
            self.password_hash_time_cost < MIN_PRODUCTION_HASH_TIME_COST
            or self.password_hash_memory_kib < MIN_PRODUCTION_HASH_MEMORY_KIB
        ):
            raise SettingsError(
                "IMGCLF_PASSWORD_HASH_TIME_COST and IMGCLF_PASSWORD_HASH_MEMORY_KIB must be at "
                f"least {MIN_PRODUCTION_HASH_TIME_COST} and {MIN_PRODUCTION_HASH_MEMORY_KIB} "
                "in production (OWASP's floor for Argon2id); the defaults are 3 and 65536"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
