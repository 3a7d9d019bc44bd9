"""Response shapes of the history feature."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from imgclf.api.feedback.schemas import FeedbackPublic
from imgclf.api.predictions.schemas import ScoredLabelPublic, UtcDatetime


class HistoryItem(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    image_file_name: str
    original_name: str | None = Field(description="The file's name on your machine, if known.")
    label: str
    score: float
    top_k: list[ScoredLabelPublic]
    model_id: str
    created_at: UtcDatetime
    feedback: FeedbackPublic | None = Field(description="Your latest feedback on it, if any.")


class HistoryPage(BaseModel):
    total: int = Field(description="All your predictions, on every page.")
    items: list[HistoryItem]
