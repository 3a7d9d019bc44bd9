"""What ``GET /models/quality`` answers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

Interval = tuple[float, float]


class Correction(BaseModel):
    correct_class: str | None = Field(description="What users said it was; null: not said.")
    count: int


class CorrectedClass(BaseModel):
    predicted_class: str
    wrong: int = Field(description="Its answers marked wrong (a user's repeats once).")
    corrected_to: list[Correction]


class ModelQuality(BaseModel):
    model: str = Field(description="The model version that answered, name@version.")
    predictions: int = Field(
        description="Pictures it answered, per user: a user's repeats of one picture count "
        "once, with their newest verdict (so do right, wrong and unmarked)."
    )
    right: int = Field(description="Marked right by their users.")
    wrong: int = Field(description="Marked wrong (with or without the right class).")
    unmarked: int = Field(description="No verdict: no feedback, or text only.")
    judges: int = Field(
        description="Users who marked its answers: the figures of a few say little, however "
        "many answers they marked."
    )
    right_share: float | None = Field(description="right / predictions; null without any.")
    interval: Interval | None = Field(description="Wilson 95% interval of right_share.")
    wrong_share: float | None
    wrong_interval: Interval | None
    unmarked_share: float | None
    unmarked_interval: Interval | None
    right_when_marked: float | None = Field(
        description="right / (right + wrong): accuracy on the images users judged."
    )
    right_when_marked_interval: Interval | None
    most_corrected: list[CorrectedClass] = Field(
        description="The predicted classes most often marked wrong, and what they were."
    )


class QualityReport(BaseModel):
    since: datetime | None = Field(description="Predictions made from this time (inclusive).")
    until: datetime | None = Field(description="... up to this time (exclusive).")
    models: list[ModelQuality]
    unlinked_feedback: int = Field(
        description="Feedback in the window that names no prediction (it cannot count)."
    )
