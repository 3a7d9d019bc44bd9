"""The service as it runs, in every mode: the API with its queue (Redis, or a batching worker in
threads of this process, chosen by settings), the database prepared once, handed to uvicorn.

The API never imports the worker: with ``IMGCLF_QUEUE_URL`` set it only talks to Redis (an
API-only install runs without ONNX Runtime).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import typer
from fastapi import FastAPI

from imgclf.api.app import create_app, prepare_database
from imgclf.api.metrics import MULTIPROCESS_DIRECTORY
from imgclf.db.engine import Database, make_engine
from imgclf.logs import configure_logging, logging_config
from imgclf.model.bundle import BundleError
from imgclf.model.repository import ModelCatalogue, read_catalogue
from imgclf.queue.base import JobQueue
from imgclf.settings import DEFAULT_ADMIN_PASSWORD, Settings, get_settings
from imgclf.tracing import configure_tracing

# uvicorn imports the app by name (it must, to start several worker processes), so each
# process builds its own app, engine and queue from the environment.
APP_FACTORY = "imgclf.serving:create_served_app"


def build_queue(settings: Settings) -> JobQueue:
    if settings.queue_url:
        from imgclf.queue.redis_queue import RedisQueue

        return RedisQueue(
            settings.queue_url,
            max_pending=settings.max_pending,
            max_queue_length=settings.queue_max_length,
            max_queue_bytes=settings.queue_max_bytes,
            read_catalogue=partial(_local_catalogue, settings),
            default_model=settings.default_model,
            promote_timeout_s=settings.promote_timeout_s,
        )
    from imgclf.worker.in_process import InProcessQueue

    return InProcessQueue(settings)


def _local_catalogue(settings: Settings) -> ModelCatalogue | None:
    """The repository, where this API process can read it; otherwise the workers' heartbeats
    tell it which models there are."""
    try:
        return read_catalogue(settings)
    except (BundleError, OSError):
        return None


def create_service_app(
    settings: Settings | None = None, *, migrate: bool | None = None, freeze_heap: bool = False
) -> FastAPI:
    """The API with the queue its settings choose; ``migrate`` and ``freeze_heap`` as in
    ``create_app``."""
    settings = settings or get_settings()
    return create_app(
        settings, queue=build_queue(settings), migrate=migrate, freeze_heap=freeze_heap
    )


def create_served_app() -> FastAPI:
    """uvicorn's factory under ``imgclf serve``, which has prepared the database already: the
    processes only check it."""
    settings = get_settings()
    if settings.tracing:
        configure_tracing("imgclf-api")
    return create_service_app(settings, migrate=False, freeze_heap=True)


def populate(settings: Settings) -> bool:
    """Migrate to the newest schema and create the admin; True if the admin was created."""
    database = Database(make_engine(settings))
    try:
        return prepare_database(database, settings, migrate=True)
    finally:
        database.dispose()


def _export_to_environment(settings: Settings) -> None:
    """Pass settings given on the command line on to uvicorn's processes, which read the env."""
    from_environment = Settings()
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value == getattr(from_environment, name):
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        os.environ[f"IMGCLF_{name.upper()}"] = text
    get_settings.cache_clear()


def login_banner(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in {"0.0.0.0", "::"} else settings.host  # noqa: S104
    url = f"http://{host}:{settings.port}"
    hint = "the value of IMGCLF_ADMIN_PASSWORD"
    is_default = settings.admin_password.get_secret_value() == DEFAULT_ADMIN_PASSWORD
    if is_default and not settings.is_production:
        hint = f"{DEFAULT_ADMIN_PASSWORD} (the development default)"
    return "\n".join(
        [
            f"imgclf API on {url}  (docs: {url}/docs)",
            f"Admin login: {settings.admin_email}  password: {hint}",
        ]
    )


def forwarding_options(settings: Settings) -> dict[str, Any]:
    """Believe X-Forwarded-For only from the proxies the settings name, none by default.

    uvicorn's own default believes it from loopback, so anything on this host, or any proxy
    here that passes the header on, could name a new client address per request and with it
    a fresh login budget.
    """
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": settings.trusted_proxies}


def run_server(settings: Settings) -> None:
    """Serve the API with uvicorn until interrupted."""
    import uvicorn

    from imgclf.http_protocol import LimitedHttpToolsProtocol

    configure_logging(settings.log_format)
    if not settings.is_production:
        # Once here rather than in each of several worker processes at the same time.
        populate(settings)
    _export_to_environment(settings)
    typer.echo(login_banner(settings))
    with _shared_metrics(settings.web_concurrency):
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.web_concurrency,
            log_level="info",
            # Each process configures its logging from this; the app writes the access lines,
            # with the request's id (uvicorn's own cannot see it).
            log_config=logging_config(settings.log_format),
            access_log=False,
            **forwarding_options(settings),
            http=LimitedHttpToolsProtocol,
        )


@contextlib.contextmanager
def _shared_metrics(processes: int) -> Iterator[None]:
    """With several processes, a fresh folder for their metrics files, removed afterwards (one
    an operator named is emptied first: files of an earlier run would be counted again)."""
    if processes < 2:
        yield
        return
    named = os.environ.get(MULTIPROCESS_DIRECTORY)
    directory = Path(named) if named else Path(tempfile.mkdtemp(prefix="imgclf-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_DIRECTORY] = str(directory)
    try:
        yield
    finally:
        if not named:
            shutil.rmtree(directory, ignore_errors=True)
