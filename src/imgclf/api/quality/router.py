"""``GET /models/quality``: per model version, how often users said it was right (admins)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BeforeValidator

from imgclf.api.deps import AdminUser, DatabaseDep
from imgclf.api.errors import error_responses
from imgclf.api.quality import service
from imgclf.api.quality.schemas import QualityReport

router = APIRouter(prefix="/models", tags=["models"])

MAX_DAYS = 3650
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def refuse_number(value: object) -> object:
    """Pydantic would read a number as seconds since 1970; the documented form is ISO 8601, and
    ``since=0`` meaning 1970 would be a surprise rather than a window."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("must be a date and time such as 2026-12-01T00:00:00Z")
    return value


IsoTime = Annotated[datetime, BeforeValidator(refuse_number)]


def as_utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC, as every stored time is."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def quality_window(
    since: datetime | None, until: datetime | None, days: int | None
) -> tuple[datetime | None, datetime | None]:
    """``[since, until)`` from the query; ``days`` counts back from ``until`` (or now)."""
    if days is not None and since is not None:
        raise ValueError("give since or days, not both")
    try:
        since, until = as_utc(since), as_utc(until)
        if days is not None:
            since = (until or datetime.now(UTC)) - timedelta(days=days)
    except OverflowError:  # a time near year 1 or 9999 moved across the calendar's edge
        raise ValueError("the window must lie within the years 1 to 9999 (in UTC)") from None
    if since is not None and until is not None and since >= until:
        raise ValueError("since must be before until")
    return since, until


@router.get(
    "/quality",
    summary="Quality from feedback, per model version (admins)",
    response_model=QualityReport,
    responses=error_responses(401, 403, 422),
)
async def read_quality(
    _admin: AdminUser,
    db: DatabaseDep,
    since: Annotated[
        IsoTime | None, Query(description="Predictions made from this time (ISO 8601).")
    ] = None,
    until: Annotated[IsoTime | None, Query(description="... and before this time.")] = None,
    days: Annotated[
        int | None, Query(ge=1, le=MAX_DAYS, description="The last N days (instead of since).")
    ] = None,
) -> QualityReport:
    """Per model version: predictions marked right, marked wrong and unmarked by the users who
    made them, with Wilson 95% intervals, and the classes most often corrected, into what."""
    try:
        window = quality_window(since, until, days)
    except ValueError as error:
        raise HTTPException(422, detail=str(error)) from None
    return await db.run(service.model_quality, since=window[0], until=window[1])
