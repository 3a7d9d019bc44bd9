"""The service as uvicorn runs it: the API plus its queue, chosen by settings.

Kept outside `imgclf.api` so the API never imports the worker: with ``IMGCLF_QUEUE_URL`` set the
API only talks to Redis (an API-only install runs without ONNX Runtime); without it, a batching
worker runs in threads of this process.
"""

from __future__ import annotations

from fastapi import FastAPI

from imgclf.api.app import create_app
from imgclf.queue.base import JobQueue
from imgclf.settings import Settings, get_settings


def build_queue(settings: Settings) -> JobQueue:
    if settings.queue_url:
        from imgclf.queue.redis_queue import RedisQueue

        return RedisQueue(
            settings.queue_url,
            max_pending=settings.max_pending,
            max_queue_length=settings.queue_max_length,
            max_queue_bytes=settings.queue_max_bytes,
        )
    from imgclf.worker.embedded import EmbeddedQueue

    return EmbeddedQueue(settings)


def create_service_app(settings: Settings | None = None) -> FastAPI:
    """uvicorn's factory (``imgclf.embedded:create_service_app``)."""
    settings = settings or get_settings()
    return create_app(settings, queue=build_queue(settings))
