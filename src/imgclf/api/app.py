"""The app factory: settings, database and queue are wired in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy import Engine

import imgclf
from imgclf.api.auth.router import router as auth_router
from imgclf.api.auth.throttle import build_auth_throttle
from imgclf.api.errors import install_error_handlers
from imgclf.api.feedback.router import router as feedback_router
from imgclf.api.health.router import router as health_router
from imgclf.api.metrics import install_metrics
from imgclf.api.middleware import BodySizeLimitMiddleware, SecurityHeadersMiddleware
from imgclf.api.paths import serve_slash_twins
from imgclf.api.predictions.admission import AdmissionMiddleware, PendingBytes
from imgclf.api.predictions.cache import build_cache
from imgclf.api.predictions.quota import StorageQuota
from imgclf.api.predictions.recorder import PredictionRecorder
from imgclf.api.predictions.router import router as predictions_router
from imgclf.api.security import PasswordHasher, hash_password, verify_password
from imgclf.api.users.router import router as users_router
from imgclf.db.engine import make_engine, make_session_factory
from imgclf.db.migrate import ensure_admin, schema_is_current, upgrade
from imgclf.settings import Settings, get_settings

logger = logging.getLogger("imgclf.api")
# How long shutdown waits for async jobs to record their answers.
BACKGROUND_JOBS_GRACE_S = 5.0


class SchemaOutdatedError(RuntimeError):
    """Production start-up found the database behind the code's migrations."""


@lru_cache(maxsize=4)
def _admin_hash(password: str) -> str:
    """Hash the admin password once per process, however many apps it builds (tests build
    one per case, and Argon2 takes a good part of a second on purpose)."""
    return hash_password(password)


def _prepare_database(app: FastAPI, settings: Settings) -> None:
    """Development: migrate and create the admin. Production: only check, never change."""
    engine = app.state.engine
    if settings.is_production:
        if not schema_is_current(engine):
            raise SchemaOutdatedError(
                "The database schema is not at the newest revision; "
                "run `imgclf populate` before starting the API"
            )
        return
    upgrade(engine)
    if ensure_admin(engine, settings, _admin_hash(settings.admin_password.get_secret_value())):
        logger.info("Created the admin user %s", settings.admin_email)
    # Warm the dummy hash that unknown-email logins verify against.
    verify_password("", None)


async def _dispose(engine: Engine) -> None:
    await anyio.to_thread.run_sync(engine.dispose)


async def _finish_background_jobs(jobs: set[asyncio.Task[None]]) -> None:
    """Async jobs whose answers came in are recorded before the recorder stops (a few seconds
    at most: the queue has closed, so the rest fail at once)."""
    if jobs:
        await asyncio.wait(set(jobs), timeout=BACKGROUND_JOBS_GRACE_S)


def create_app(settings: Settings | None = None, *, queue: Any | None = None) -> FastAPI:
    """A fresh app. ``queue`` (a ``JobQueue``) is started and closed by the app's lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings)
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        app.state.write_session_factory = make_session_factory(engine, writes=True)
        app.state.password_hasher = PasswordHasher(
            max_waiting=settings.password_checks_waiting,
            max_per_client=settings.password_checks_per_address,
        )
        # Whatever started is stopped, in reverse order, however far the start-up got.
        async with contextlib.AsyncExitStack() as started:
            started.push_async_callback(_dispose, engine)
            await anyio.to_thread.run_sync(_prepare_database, app, settings)
            settings.upload_dir.mkdir(parents=True, exist_ok=True)
            app.state.prediction_cache = cache = build_cache(settings)
            if cache is not None:
                started.push_async_callback(cache.close)
            app.state.auth_throttle = throttle = build_auth_throttle(settings)
            started.push_async_callback(throttle.close)
            app.state.storage_quota = quota = StorageQuota(
                app.state.session_factory, settings.user_storage_quota_mb * 2**20
            )
            app.state.recorder = recorder = PredictionRecorder(
                app.state.write_session_factory,
                settings.upload_dir,
                quota=quota,
                timeout_s=settings.predict_timeout_s,
            )
            recorder.start()
            started.push_async_callback(recorder.close)
            app.state.background_jobs = set()
            started.push_async_callback(_finish_background_jobs, app.state.background_jobs)
            if queue is not None:
                await queue.start()
                started.push_async_callback(queue.close)
            yield

    app = FastAPI(
        title="imgclf",
        version=imgclf.__version__,
        description="Upload a photo, learn what is in it, tell us whether we were right.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.queue = queue
    app.state.pending_bytes = PendingBytes(settings.max_pending_bytes)

    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimitMiddleware, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(AdmissionMiddleware)  # inside the security headers, outside the rest
    app.add_middleware(SecurityHeadersMiddleware)
    install_metrics(app)

    app.include_router(health_router)
    app.include_router(auth_router)
    app.include_router(users_router)
    app.include_router(feedback_router)
    app.include_router(predictions_router)
    serve_slash_twins(app)
    return app
