"""/models: what is served, and the admin's version swap."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from imgclf.api.deps import AdminUser, CurrentUser, QueueDep
from imgclf.api.errors import error_responses
from imgclf.api.models.schemas import LiveVersionUpdate, ModelPublic
from imgclf.queue.models import ModelStatus

router = APIRouter(prefix="/models", tags=["models"])


def _public(status: ModelStatus) -> ModelPublic:
    return ModelPublic(
        name=status.name,
        live=status.live,
        live_version=status.live_version,
        versions=status.versions,
        input_size=status.input_size,
        precision=status.precision,
        accuracy=status.accuracy,
        default=status.default,
        workers=status.workers,
        queue_depth=status.queue_depth,
        loaded=status.loaded,
    )


@router.get(
    "",
    response_model=list[ModelPublic],
    summary="The models, their versions and who serves them",
    responses=error_responses(401, 503),
)
async def read_models(_user: CurrentUser, queue: QueueDep) -> list[ModelPublic]:
    return [_public(status) for status in await queue.model_statuses()]


@router.put(
    "/{name}/live",
    response_model=ModelPublic,
    summary="Make a version live, without downtime (admins only)",
    responses=error_responses(400, 401, 403, 404, 422, 503),
)
async def promote_version(
    name: Annotated[str, Path(max_length=100)],
    update: LiveVersionUpdate,
    _admin: AdminUser,
    queue: QueueDep,
) -> ModelPublic:
    """The workers serving the model load and warm the version beside the live one; then new
    requests get it. Requests admitted before finish on the version they were admitted for.
    Rolling back is the same call with the old version."""
    return _public(await queue.promote(name, update.version))
