"""What ``/models`` shows and takes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelPublic(BaseModel):
    name: str
    live: str = Field(description="name@version: the version new requests get")
    live_version: int
    versions: list[int]
    input_size: int
    precision: str
    accuracy: float | None = Field(description="published ImageNet top-1 of the live version")
    default: bool = Field(description="what a request without ?model= gets")
    workers: int = Field(description="live workers serving this model")
    queue_depth: int = Field(description="jobs waiting for a worker")
    loaded: list[str] = Field(description="versions the workers hold in memory")


class LiveVersionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="the version to make live (rolling back: the old one)")
