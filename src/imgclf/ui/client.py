"""A small client for the imgclf HTTP API, as the UI uses it.

Every call has a timeout and returns either its typed result or an ``ApiError``: a refusal
(4xx/5xx) carries the API's own ``detail`` text, and a server that cannot be reached becomes a
sentence, never a traceback. One ``requests.Session`` keeps connections alive between calls.
"""

from __future__ import annotations

import http.cookiejar
import logging
import mimetypes
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from pydantic import BaseModel, TypeAdapter, ValidationError

# The API's own response schemas (plain pydantic, no web framework): what the API promises is
# what the UI checks, field by field.
from imgclf.api.auth.schemas import Token
from imgclf.api.feedback.schemas import FeedbackPublic as Feedback
from imgclf.api.history.schemas import HistoryItem, HistoryPage
from imgclf.api.models.schemas import ModelPublic as Model
from imgclf.api.predictions.schemas import PredictionResponse as Prediction
from imgclf.api.quality.schemas import QualityReport
from imgclf.api.users.schemas import UserMe as Me
from imgclf.api.users.schemas import UserPublic as User

__all__ = [
    "ApiClient",
    "ApiError",
    "Feedback",
    "HistoryItem",
    "HistoryPage",
    "Me",
    "Model",
    "Prediction",
    "QualityReport",
    "ShadowPair",
    "ShadowReport",
    "Token",
    "User",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# (connect, read) seconds. A prediction waits for the model behind a queue, so it may read longer.
TIMEOUT_S = (3.05, 15.0)
PREDICT_TIMEOUT_S = (3.05, 60.0)


@dataclass(frozen=True)
class ApiError:
    """Why a call failed; ``status`` is None when no HTTP answer came back."""

    message: str
    status: int | None = None

    @property
    def unauthorized(self) -> bool:
        """The token is missing, expired or no longer valid: the user must log in again."""
        return self.status == 401


class ShadowAgreement(BaseModel):
    agreed: int
    share: float
    interval: tuple[float, float]


class ShadowDay(BaseModel):
    day: str
    comparisons: int
    top1_agreement: ShadowAgreement


class ShadowPair(BaseModel):
    """One live version against its candidate (the fields of ``GET /models/{name}/shadow`` the
    page shows; the others are ignored)."""

    live: str
    candidate: str
    comparisons: int
    top1_agreement: ShadowAgreement
    by_day: list[ShadowDay] = []


class ShadowReport(BaseModel):
    model: str
    candidate: str | None
    fraction: float
    days: int | None = None
    pairs: list[ShadowPair] = []


class ApiClient:
    """The API at ``base_url``. Safe to share between UI sessions: it keeps no token or cookie."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()
        # Tokens travel per call in a header; a shared cookie jar could leak state between users.
        self._session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    def close(self) -> None:
        self._session.close()

    def _call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        timeout: tuple[float, float] = TIMEOUT_S,
        client_address: str | None = None,
        raw: bool = False,
        **kwargs: Any,
    ) -> Any | ApiError:
        """The decoded JSON body of a 2xx answer, or an ``ApiError``.

        ``client_address`` is the browser's, for the API's per-address login and sign-up
        budgets; the API believes it only if its IMGCLF_TRUSTED_PROXIES names this UI.
        """
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if client_address:
            headers["X-Forwarded-For"] = client_address
        try:
            response = self._session.request(
                method, self.base_url + path, headers=headers, timeout=timeout, **kwargs
            )
        # The API's address is for the log, not for the people using the page.
        except requests.Timeout:
            logger.warning(
                "the API at %s did not answer %s %s in time", self.base_url, method, path
            )
            return ApiError("The service did not answer in time; try again.")
        except requests.RequestException as error:
            logger.warning("cannot reach the API at %s: %s", self.base_url, error)
            return ApiError("The service cannot be reached right now; try again in a minute.")
        if response.ok:
            if not raw:
                try:
                    return response.json() if response.content else None
                except ValueError:
                    return ApiError(f"The service answered {response.status_code}, not in JSON.")
            return response.content
        return ApiError(_detail(response), response.status_code)

    def start_session(
        self, email: str, password: str, client_address: str | None = None
    ) -> Token | ApiError:
        """Log in for a session that renews: an access token and a refresh token."""
        body = self._call(
            "POST",
            "/login",
            client_address=client_address,
            data={"username": email, "password": password, "scope": "offline_access"},
        )
        return self._parse(body, Token)

    def renew(self, refresh_token: str) -> Token | ApiError:
        """A fresh access token while the session's refresh token lives."""
        body = self._call("POST", "/login/refresh", json={"refresh_token": refresh_token})
        return self._parse(body, Token)

    def end_session(self, refresh_token: str) -> ApiError | None:
        ended = self._call("POST", "/logout", json={"refresh_token": refresh_token})
        return ended if isinstance(ended, ApiError) else None

    def sign_up(
        self, name: str, email: str, password: str, client_address: str | None = None
    ) -> User | ApiError:
        body = self._call(
            "POST",
            "/user/",
            client_address=client_address,
            json={"name": name, "email": email, "password": password},
        )
        return self._parse(body, User)

    def me(self, token: str) -> Me | ApiError:
        return self._parse(self._call("GET", "/user/me", token), Me)

    def predict(
        self, token: str, file_name: str, data: bytes, model: str | None = None
    ) -> Prediction | ApiError:
        """Classify one image with ``model`` (the API's default when None); ``file_name``
        gives the API its extension."""
        content_type = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        body = self._call(
            "POST",
            "/model/predict",
            token,
            timeout=PREDICT_TIMEOUT_S,
            params={"model": model} if model else None,
            files={"file": (file_name, data, content_type)},
        )
        return self._parse(body, Prediction)

    def models(self, token: str) -> list[Model] | ApiError:
        """The models the API serves, their versions and who serves them."""
        return self._parse(self._call("GET", "/models", token), list[Model])

    def make_live(self, token: str, name: str, version: int) -> Model | ApiError:
        """Promote (or roll back to) ``version`` of ``name`` (admins only)."""
        body = self._call(
            "PUT", f"/models/{quote(name, safe='')}/live", token, json={"version": version}
        )
        return self._parse(body, Model)

    def quality(self, token: str) -> QualityReport | ApiError:
        """Feedback quality per model version (admins only)."""
        return self._parse(self._call("GET", "/models/quality", token), QualityReport)

    def shadow(self, token: str, name: str) -> ShadowReport | ApiError:
        """The shadow comparison set for ``name`` and its figures (admins only)."""
        return self._parse(
            self._call("GET", f"/models/{quote(name, safe='')}/shadow", token), ShadowReport
        )

    def send_feedback(
        self,
        token: str,
        feedback: str,
        score: float,
        predicted_class: str,
        image_file_name: str,
        prediction_id: int | None = None,
    ) -> Feedback | ApiError:
        body = self._call(
            "POST",
            "/feedback",
            token,
            json={
                "feedback": feedback,
                "score": score,
                "predicted_class": predicted_class,
                "image_file_name": image_file_name,
                "prediction_id": prediction_id,
            },
        )
        return self._parse(body, Feedback)

    def history_page(self, token: str, limit: int, offset: int) -> HistoryPage | ApiError:
        """One page of the user's predictions, each with its latest feedback, and the total."""
        body = self._call("GET", "/history", token, params={"limit": limit, "offset": offset})
        return self._parse(body, HistoryPage)

    def prediction_image(self, token: str, prediction_id: int) -> bytes | ApiError:
        """The image one of the user's predictions was made on."""
        body = self._call("GET", f"/model/predictions/{prediction_id}/image", token, raw=True)
        return body if isinstance(body, ApiError | bytes) else ApiError("No image came back.")

    def _parse(self, body: Any, shape: type[T]) -> T | ApiError:
        """``body`` validated as ``shape``, or an ``ApiError`` if the body is one or is not the
        API's shape."""
        if isinstance(body, ApiError):
            return body
        try:
            return TypeAdapter(shape).validate_python(body)
        except ValidationError:
            logger.error("%s answered, but not as the imgclf API does", self.base_url)
            return ApiError("The service answered in a way this page does not understand.")


def _detail(response: requests.Response) -> str:
    """The API's ``{"detail": ...}`` text, or a plain sentence when the body has none."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail:
        return detail
    return f"The API answered {response.status_code} {response.reason or ''}".strip() + "."
