"""``GET /``, ``/health/live`` (the process answers) and ``/health/ready`` (it can do its job)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from fastapi import APIRouter, Response, status
from sqlalchemy import Engine, text

import imgclf
from imgclf.api.deps import StateDep
from imgclf.api.health.schemas import Index, Liveness, Readiness
from imgclf.queue.base import JobQueue

logger = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])
# A readiness probe must answer even when what it checks hangs.
CHECK_TIMEOUT_S = 3.0


@router.get("/", summary="Where things are", response_model=Index)
async def index() -> Index:
    """What this service is and which version runs."""
    return Index(version=imgclf.__version__)


@router.get("/health/live", summary="Whether the process answers", response_model=Liveness)
async def live() -> Liveness:
    """200 while the process runs."""
    return Liveness()


def _ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def _database_check(engine: Engine) -> str:
    try:
        with anyio.fail_after(CHECK_TIMEOUT_S):
            await anyio.to_thread.run_sync(_ping, engine, abandon_on_cancel=True)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as error:
        # Probes are public: the reason (addresses, server messages) goes to the log only.
        logger.warning("readiness: the database is unavailable: %s", error)
        return "unavailable"
    return "ok"


async def _queue_checks(queue: JobQueue) -> tuple[dict[str, str | int], bool]:
    """The queue's own report, and whether the model is loaded (it knows its model id then)."""
    try:
        with anyio.fail_after(CHECK_TIMEOUT_S):
            report: dict[str, Any] = await queue.readiness()
    except TimeoutError:
        return {"queue": f"no answer within {CHECK_TIMEOUT_S:g} s", "workers": 0}, False
    except Exception as error:
        logger.warning("readiness: the queue is unavailable: %s", error)
        return {"queue": "unavailable", "workers": 0}, False
    checks: dict[str, str | int] = {
        "queue": str(report.get("queue", "unknown")),
        "workers": int(report.get("workers", 0)),
        "model": str(report.get("model", "unknown")),
    }
    return checks, bool(queue.model_id)


@router.get(
    "/health/ready",
    summary="Whether the database, the queue and the workers are ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A check failed; its reason is shown"}},
)
async def ready(state: StateDep, response: Response) -> Readiness:
    """200 when the database and the queue answer, a worker is alive and the model is loaded."""
    checks: dict[str, str | int] = {"database": await _database_check(state.database.engine)}
    queue = state.queue
    model_loaded = False
    if queue is None:
        checks.update({"queue": "not configured", "workers": 0, "model": "not configured"})
    else:
        queue_checks, model_loaded = await _queue_checks(queue)
        checks.update(queue_checks)
    workers = checks["workers"]
    is_ready = (
        checks["database"] == "ok"
        and checks["queue"] == "ok"
        and isinstance(workers, int)
        and workers >= 1
        and model_loaded
    )
    if not is_ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(status="ready" if is_ready else "not ready", checks=checks)
