"""What the feedback routes accept and return."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imgclf.api.text import NoNul


class FeedbackCreate(BaseModel):
    """Feedback on a prediction. Name it by ``prediction_id``; the seed's clients name it by
    ``image_file_name`` instead (with ``score`` and ``predicted_class``), and it is linked to
    their newest prediction of that image."""

    model_config = ConfigDict(extra="forbid")

    feedback: Annotated[
        str, Field(default="", max_length=2000, description="What the user says."), NoNul
    ]
    # The seed's clients' account of the prediction, required of them and not stored: the
    # feedback always keeps the prediction's own values, whatever these say.
    score: Annotated[
        float | None, Field(default=None, ge=0, le=1, description="The prediction's score.")
    ]
    predicted_class: Annotated[str | None, Field(default=None, min_length=1, max_length=200), NoNul]
    image_file_name: Annotated[str | None, Field(default=None, min_length=1, max_length=255), NoNul]
    prediction_id: Annotated[
        int | None,
        Field(default=None, ge=1, le=2**31 - 1, description="One of your own predictions."),
    ]
    correct: Annotated[
        bool | None,
        Field(default=None, strict=True, description="Whether the prediction was right."),
    ]
    correct_class: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            max_length=200,
            description="The right class when it was wrong: a label name of the model "
            "(Eskimo_dog) or its WordNet id (n02109961).",
        ),
        NoNul,
    ]

    @model_validator(mode="after")
    def _names_its_prediction(self) -> FeedbackCreate:
        if self.prediction_id is None:
            missing = [
                field
                for field in ("score", "predicted_class", "image_file_name")
                if getattr(self, field) is None
            ]
            if missing:
                raise ValueError(f"without a prediction_id, {' and '.join(missing)} required")
        return self


class FeedbackPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    score: float
    predicted_class: str
    image_file_name: str
    feedback: str
    prediction_id: int | None
    correct: bool | None = None
    correct_class: str | None = None
