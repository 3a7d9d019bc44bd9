"""Request and response shapes of the predictions feature."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class ScoredLabelPublic(BaseModel):
    label: str = Field(examples=["Eskimo_dog"])
    score: float = Field(ge=0, le=1, examples=[0.6222])


class PredictionResponse(BaseModel):
    success: bool = True
    prediction: str = Field(description="The most likely class.", examples=["Eskimo_dog"])
    score: float = Field(description="Its probability, rounded to 4 places.", examples=[0.6222])
    image_file_name: str = Field(description="md5 of the bytes + the upload's extension.")
    top_k: list[ScoredLabelPublic]
    prediction_id: int
    model: str = Field(description="The model bundle that answered.")
    cached: bool = Field(description="Answered from the cache of earlier identical uploads.")


def _in_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# Stored in UTC; SQLite gives it back without its zone, which a client would read as local time.
UtcDatetime = Annotated[datetime, AfterValidator(_in_utc)]


class PredictionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    image_file_name: str
    label: str
    score: float
    top_k: list[ScoredLabelPublic]
    model_id: str
    latency_ms: float
    cached: bool
    created_at: UtcDatetime


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["pending"] = "pending"


class JobStatus(BaseModel):
    job_id: str
    status: Literal["pending", "done", "failed"]
    prediction: str | None = None
    score: float | None = None
    top_k: list[ScoredLabelPublic] = []
    model: str | None = None
    error: str | None = None
