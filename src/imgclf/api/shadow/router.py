"""``/models/{name}/shadow``: set, stop and read a model's shadow comparison (admins only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from imgclf.api.deps import AdminUser, DatabaseDep, QueueDep, StateDep
from imgclf.api.errors import error_responses
from imgclf.api.shadow import service
from imgclf.api.shadow.runner import ShadowRunner
from imgclf.api.shadow.schemas import ShadowReport, ShadowSettingPublic, ShadowUpdate
from imgclf.api.shadow.store import ShadowSetting
from imgclf.queue.base import JobQueue
from imgclf.queue.models import UnknownModelError

router = APIRouter(prefix="/models", tags=["models"])

ModelName = Annotated[str, Path(max_length=100)]
MAX_DAYS = 3650


async def get_shadow(state: StateDep) -> ShadowRunner:
    if state.shadow is None:
        raise HTTPException(503, "No model worker is configured for this service.")
    return state.shadow


ShadowDep = Annotated[ShadowRunner, Depends(get_shadow)]


async def _known(queue: JobQueue, name: str, candidate: str | None = None) -> None:
    """404 naming the models there, for a model or a candidate version that is not."""
    statuses = await queue.model_statuses()
    if name not in {model.name for model in statuses}:
        raise UnknownModelError(name, sorted(model.name for model in statuses))
    versions = [f"{model.name}@{v}" for model in statuses for v in model.versions]
    if candidate is not None and candidate not in versions:
        raise UnknownModelError(candidate, versions)


def _setting(name: str, shadow: ShadowRunner) -> ShadowSettingPublic:
    setting = shadow.shadows.get(name)
    return ShadowSettingPublic(
        model=name,
        candidate=setting.candidate if setting else None,
        fraction=setting.fraction if setting else 0.0,
    )


@router.put(
    "/{name}/shadow",
    response_model=ShadowSettingPublic,
    summary="Copy a share of a model's uploads to a candidate version (admins only)",
    responses=error_responses(400, 401, 403, 404, 422, 503),
)
async def set_shadow(
    name: ModelName, update: ShadowUpdate, _admin: AdminUser, queue: QueueDep, shadow: ShadowDep
) -> ShadowSettingPublic:
    """That share of the model's uploads is also classified by the candidate, after the caller
    has its answer and only while the workers have room; the two answers are compared and
    recorded. A fraction of 0 stops it, as DELETE does."""
    await _known(queue, name, update.candidate)
    live = next(m.live for m in await queue.model_statuses() if m.name == name)
    if update.candidate == live:
        raise HTTPException(
            422, f"{live} is the live version of {name}: name another version or model"
        )
    setting = ShadowSetting(update.candidate, update.fraction) if update.fraction > 0 else None
    await shadow.set(name, setting)
    return _setting(name, shadow)


@router.delete(
    "/{name}/shadow",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Stop a model's shadow comparison (admins only)",
    responses=error_responses(401, 403, 404, 503),
)
async def stop_shadow(
    name: ModelName, _admin: AdminUser, queue: QueueDep, shadow: ShadowDep
) -> None:
    await _known(queue, name)
    await shadow.set(name, None)


@router.get(
    "/{name}/shadow",
    response_model=ShadowReport,
    summary="How a model's shadow candidates answered beside it (admins only)",
    responses=error_responses(401, 403, 404, 422, 503),
)
async def read_shadow(
    name: ModelName,
    _admin: AdminUser,
    queue: QueueDep,
    shadow: ShadowDep,
    db: DatabaseDep,
    days: Annotated[int, Query(ge=1, le=MAX_DAYS, description="The last N days.")] = 7,
) -> ShadowReport:
    """Per live version and candidate compared in the window: top-1 agreement with its Wilson
    95% interval, and the means of the top-5 overlap, the score difference and each side's
    latency with 95% intervals (Student's t), with the number of comparisons."""
    await _known(queue, name)
    since = datetime.now(UTC) - timedelta(days=days)
    pairs = await db.run(service.shadow_pairs, name, since)
    return ShadowReport(**_setting(name, shadow).model_dump(), days=days, pairs=pairs)
