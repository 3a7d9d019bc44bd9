"""The app factory: settings, database and queue are wired in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache, partial

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline
from pwdlib import PasswordHash

import imgclf
from imgclf.api.auth.router import router as auth_router
from imgclf.api.auth.throttle import build_auth_throttle
from imgclf.api.errors import install_error_handlers
from imgclf.api.feedback.router import router as feedback_router
from imgclf.api.health.router import router as health_router
from imgclf.api.history.router import router as history_router
from imgclf.api.metrics import ServiceMetrics, install_metrics
from imgclf.api.middleware import (
    BodySizeLimitMiddleware,
    RequestIdMiddleware,
)
from imgclf.api.models.router import router as models_router
from imgclf.api.paths import serve_slash_twins
from imgclf.api.predictions.admission import AdmissionMiddleware, PendingBytes, WaitingPerUser
from imgclf.api.predictions.cache import build_cache
from imgclf.api.predictions.quota import StorageQuota
from imgclf.api.predictions.recorder import PredictionRecorder
from imgclf.api.predictions.retention import HistoryRetention
from imgclf.api.predictions.router import router as predictions_router
from imgclf.api.quality.router import router as quality_router
from imgclf.api.security import (
    PasswordHasher,
    VerifiedTokens,
    hash_password,
    password_hashing,
    verify_password,
)
from imgclf.api.shadow.recorder import ComparisonRecorder
from imgclf.api.shadow.router import router as shadow_router
from imgclf.api.shadow.runner import ShadowRunner
from imgclf.api.shadow.store import build_shadow_store
from imgclf.api.state import AppState
from imgclf.api.users.router import router as users_router
from imgclf.db.engine import Database, make_engine
from imgclf.db.migrate import ensure_admin, schema_is_current, upgrade
from imgclf.heap import freeze_startup_heap, return_large_blocks
from imgclf.http_protocol import SecurityHeadersMiddleware
from imgclf.queue.base import JobQueue
from imgclf.settings import Settings, get_settings

logger = logging.getLogger("imgclf.api")
# How long shutdown waits for async jobs' answers to come and be recorded; then for the rest to
# record that they failed.
BACKGROUND_JOBS_GRACE_S = 5.0
BACKGROUND_JOBS_FAILING_S = 2.0


class SchemaOutdatedError(RuntimeError):
    """Production start-up found the database behind the code's migrations."""


API_GUIDE = """Upload a photo, learn what is in it (one of the 1000 ImageNet classes, with the
runners-up), tell us whether we were right.

**Try it on this page**: sign up with `POST /user/`, press **Authorize** and log in with your
email as the username, then open `POST /model/predict`, choose a photo and press **Execute**.
Every error answers `{"detail": "..."}` saying what was wrong."""


# The sections of /docs, in the order a newcomer needs them.
DOCS_SECTIONS = ("operations", "auth", "users", "feedback", "predictions", "models", "history")


@lru_cache(maxsize=4)
def _admin_hash(password: str, hashing: PasswordHash) -> str:
    """Hash the admin password once per process and cost, however many apps it builds (tests
    build one per case, and Argon2 at its default cost takes 0.15 s of a core on purpose)."""
    return hash_password(password, hashing)


def prepare_database(database: Database, settings: Settings, *, migrate: bool) -> bool:
    """The one place that migrates: to the newest schema, with the admin user, when
    ``migrate``; otherwise only check the schema is current, never change it. True if the
    admin was created."""
    if not migrate:
        if not schema_is_current(database.engine):
            raise SchemaOutdatedError(
                "The database schema is not at the newest revision; "
                "run `imgclf populate` before starting the API"
            )
        return False
    upgrade(database.engine)
    created = ensure_admin(
        database,
        settings,
        _admin_hash(settings.admin_password.get_secret_value(), password_hashing(settings)),
    )
    if created:
        logger.info("Created the admin user %s", settings.admin_email)
    return created


async def _finish_background_jobs(jobs: set[asyncio.Task[None]]) -> None:
    """Before the queue and the recorder stop: async jobs whose answers come within a few
    seconds are recorded; the rest are cancelled, and each stores that it failed (see
    ``_run_job``), which a worker's later answer does not replace."""
    if not jobs:
        return
    _done, unanswered = await asyncio.wait(set(jobs), timeout=BACKGROUND_JOBS_GRACE_S)
    for job in unanswered:
        job.cancel()
    if unanswered:
        await asyncio.wait(unanswered, timeout=BACKGROUND_JOBS_FAILING_S)


async def _start(
    settings: Settings,
    queue: JobQueue | None,
    metrics: ServiceMetrics,
    started: contextlib.AsyncExitStack,
    *,
    migrate: bool,
) -> AppState:
    """Everything the app holds, each part pushed on ``started`` to be closed in reverse."""
    database = Database(make_engine(settings))
    started.push_async_callback(anyio.to_thread.run_sync, database.dispose)
    await anyio.to_thread.run_sync(partial(prepare_database, database, settings, migrate=migrate))
    # Warm the dummy hash that unknown-email logins verify against.
    hashing = password_hashing(settings)
    await anyio.to_thread.run_sync(verify_password, "", None, hashing)
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    cache = build_cache(settings)
    if cache is not None:
        started.push_async_callback(cache.close)
    throttle = build_auth_throttle(settings)
    started.push_async_callback(throttle.close)
    quota = StorageQuota(database, settings.user_storage_quota_mb * 2**20)
    recorder, retention = _start_writers(settings, database, quota, metrics, started)
    state = AppState(
        settings=settings,
        database=database,
        queue=queue,
        cache=cache,
        password_hasher=PasswordHasher(
            hashing,
            max_waiting=settings.password_checks_waiting,
            max_per_client=settings.password_checks_per_address,
        ),
        auth_throttle=throttle,
        storage_quota=quota,
        recorder=recorder,
        retention=retention,
        pending_bytes=PendingBytes(settings.max_pending_bytes, settings.max_pending_bytes_per_user),
        waiting=WaitingPerUser(settings.max_pending_per_user),
        metrics=metrics,
        tokens=VerifiedTokens(settings),
    )
    if queue is not None:
        await queue.start()
        started.push_async_callback(queue.close)
        state.shadow = await _start_shadow(settings, database, queue, metrics, started)
        # First at shutdown: the jobs still need the queue, the shadow and the recorder.
        started.push_async_callback(_finish_background_jobs, state.background_jobs)
    return state


def _start_writers(
    settings: Settings,
    database: Database,
    quota: StorageQuota,
    metrics: ServiceMetrics,
    started: contextlib.AsyncExitStack,
) -> tuple[PredictionRecorder, HistoryRetention]:
    """The threads that write in the background: the predictions' recorder and the sweeper
    that keeps each user's history to its length."""
    recorder = PredictionRecorder(
        database, settings.upload_dir, quota=quota, timeout_s=settings.predict_timeout_s
    )
    recorder.start()
    started.push_async_callback(recorder.close)
    retention = HistoryRetention(
        database,
        settings.upload_dir,
        keep=settings.history_keep,
        every_s=settings.history_sweep_s,
        on_pruned=metrics.history_pruned.inc,
    )
    retention.start()
    started.push_async_callback(retention.close)
    return recorder, retention


async def _start_shadow(
    settings: Settings,
    database: Database,
    queue: JobQueue,
    metrics: ServiceMetrics,
    started: contextlib.AsyncExitStack,
) -> ShadowRunner:
    def dropped(row: dict[str, object]) -> None:
        metrics.shadow_dropped.labels(str(row["model"]), "recorder").inc()

    recorder = ComparisonRecorder(database, on_dropped=dropped)
    recorder.start()
    started.push_async_callback(anyio.to_thread.run_sync, recorder.close)
    shadow = ShadowRunner(settings, build_shadow_store(settings), queue, recorder, metrics)
    await shadow.start()
    started.push_async_callback(shadow.close)
    return shadow


def create_app(
    settings: Settings | None = None,
    *,
    queue: JobQueue | None = None,
    migrate: bool | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """A fresh app. ``queue`` is started and closed by the app's lifespan. ``migrate``:
    bring the database to the newest schema as it starts (by default in development only;
    otherwise it only checks that the schema is current). ``freeze_heap``: the app is its
    process's own (``imgclf serve``), whose start-up heap is then frozen (``imgclf.heap``)."""
    settings = settings or get_settings()
    migrate = (not settings.is_production) if migrate is None else migrate
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Whatever started is stopped, in reverse order, however far the start-up got.
        async with contextlib.AsyncExitStack() as started:
            app.state.running = await _start(settings, queue, metrics, started, migrate=migrate)
            if freeze_heap:
                freeze_startup_heap()
                return_large_blocks()
            yield

    # /docs and /redoc with their scripts and styles served from the package itself: the pages
    # work on a machine without internet, and a browser fetches nothing from a CDN.
    app = FastAPIOffline(
        title="imgclf",
        version=imgclf.__version__,
        description=API_GUIDE,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
        openapi_tags=[{"name": section} for section in DOCS_SECTIONS],
        telemetry=_fastapi_telemetry(settings),
    )
    install_error_handlers(app)
    _add_middleware(app, settings, metrics)
    _include_routers(app)
    return app


def _fastapi_telemetry(settings: Settings) -> TelemetryConfig:
    """FastAPI's own OpenTelemetry spans when the service traces; off entirely otherwise:
    deciding for each request that nothing was configured cost it two reads of the process's
    environment."""
    if settings.tracing:
        return {}
    return {"tracing": False, "metrics": False, "logs": False}


def _add_middleware(app: FastAPI, settings: Settings, metrics: ServiceMetrics) -> None:
    """Added innermost first: a request meets them in the reverse order."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_upload_bytes=settings.max_upload_bytes,
        body_pause_s=settings.body_pause_s,
        min_rate=settings.body_min_rate_kib_s * 1024,
    )
    app.add_middleware(AdmissionMiddleware)  # inside the security headers, outside the rest
    app.add_middleware(SecurityHeadersMiddleware)
    install_metrics(app, metrics)
    # Outermost: every answer, a refusal by the middleware above included, carries its id.
    app.add_middleware(RequestIdMiddleware, access_log=settings.access_log)


def _include_routers(app: FastAPI) -> None:
    # First: FastAPI tries the routes in order, and every upload would first be compared with
    # each route before it (0.15 ms of the event loop's CPU a request, measured). The docs keep
    # their order (DOCS_SECTIONS).
    app.include_router(predictions_router)
    app.include_router(health_router)
    app.include_router(auth_router)
    app.include_router(users_router)
    app.include_router(feedback_router)
    # Before any /models/{name} route, which would take "quality" for a model's name.
    app.include_router(quality_router)
    app.include_router(models_router)
    app.include_router(history_router)
    app.include_router(shadow_router)
    serve_slash_twins(app)
