"""Request and response shapes of the predictions feature."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    created_at: datetime


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
