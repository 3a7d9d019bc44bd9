"""What ``/models/{name}/shadow`` takes and answers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

Interval = tuple[float, float]


class ShadowUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: str = Field(
        max_length=200,
        pattern=r"^[^@\s]+@[1-9][0-9]*$",
        description="the version to compare, name@version (any model of the repository)",
    )
    fraction: float = Field(
        description="the share of the model's uploads copied to it, 0 to 1; 0 stops",
        json_schema_extra={"minimum": 0, "maximum": 1},
    )

    @field_validator("fraction")
    @classmethod
    def _a_share(cls, fraction: float) -> float:
        if not 0 <= fraction <= 1:
            raise ValueError("the fraction must be between 0 and 1 (0 stops the shadow)")
        return fraction


class ShadowSettingPublic(BaseModel):
    model: str
    candidate: str | None = Field(description="name@version, or null when no shadow is set")
    fraction: float


class Agreement(BaseModel):
    agreed: int = Field(description="uploads whose top-1 label both versions gave")
    share: float
    interval: Interval = Field(description="Wilson 95% interval of the share")


class Estimate(BaseModel):
    mean: float
    interval: Interval | None = Field(
        description="95% interval of the mean (Student's t); null for a single comparison"
    )


class DailyAgreement(BaseModel):
    day: str = Field(description="the day (UTC), YYYY-MM-DD")
    comparisons: int
    top1_agreement: Agreement


class ShadowPair(BaseModel):
    live: str
    candidate: str
    comparisons: int
    top1_agreement: Agreement
    top5_overlap: Estimate = Field(description="labels both top-5 lists hold, 0 to 5")
    score_difference: Estimate = Field(description="candidate's top-1 score minus the live one's")
    live_latency_ms: Estimate
    candidate_latency_ms: Estimate
    by_day: list[DailyAgreement] = Field(
        default=[], description="top-1 agreement day by day, oldest first: how it moves"
    )


class ShadowReport(ShadowSettingPublic):
    days: int = Field(description="the window: comparisons of the last N days")
    pairs: list[ShadowPair] = Field(description="one per live version and candidate compared")
