"""The UI's API client with the calls only tests make: a plain login, and the raw lists of
predictions and feedback that the UI reads as one history page."""

from __future__ import annotations

from pydantic import BaseModel

from imgclf.api.auth.schemas import Token
from imgclf.api.feedback.schemas import FeedbackPublic
from imgclf.api.predictions.schemas import PredictionPublic
from imgclf.ui.client import ApiClient, ApiError


class History(BaseModel):
    """A user's latest predictions and feedback, newest first."""

    predictions: list[PredictionPublic]
    feedback: list[FeedbackPublic]


class ApiForTests(ApiClient):
    def login(self, email: str, password: str, client_address: str | None = None) -> str | ApiError:
        """An access token for these credentials (the OAuth2 password form of ``/login``)."""
        form = {"username": email, "password": password}
        body = self._call("POST", "/login", client_address=client_address, data=form)
        token = self._parse(body, Token)
        return token if isinstance(token, ApiError) else token.access_token

    def history(self, token: str, limit: int = 20) -> History | ApiError:
        page = {"limit": limit}
        predictions = self._call("GET", "/model/predictions", token, params=page)
        if isinstance(predictions, ApiError):
            return predictions
        feedback = self._call("GET", "/feedback/", token, params=page)
        if isinstance(feedback, ApiError):
            return feedback
        return self._parse({"predictions": predictions, "feedback": feedback}, History)
