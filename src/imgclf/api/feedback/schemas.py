"""What the feedback routes accept and return."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from imgclf.api.text import NoNul


class FeedbackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feedback: Annotated[str, Field(max_length=2000, description="What the user says."), NoNul]
    score: Annotated[float, Field(ge=0, le=1, description="The prediction's score.")]
    predicted_class: Annotated[str, Field(min_length=1, max_length=200), NoNul]
    image_file_name: Annotated[str, Field(min_length=1, max_length=255), NoNul]
    prediction_id: Annotated[
        int | None,
        Field(default=None, ge=1, le=2**31 - 1, description="One of your own predictions."),
    ]


class FeedbackPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    score: float
    predicted_class: str
    image_file_name: str
    feedback: str
    prediction_id: int | None
