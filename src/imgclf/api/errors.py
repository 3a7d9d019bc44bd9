"""One error shape, ``{"detail": "..."}``, for every error the API returns, and its OpenAPI docs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from imgclf.api.feedback.service import FeedbackQuotaExceeded, PredictionNotFound
from imgclf.api.middleware import REQUEST_ID_HEADER
from imgclf.api.predictions.form import UploadFormError
from imgclf.api.predictions.quota import QuotaExceededError
from imgclf.api.predictions.recorder import RecordingUnavailableError
from imgclf.api.predictions.uploads import StorageFullError
from imgclf.api.users.service import AccountGoneError, EmailTaken
from imgclf.http_protocol import SECURITY_HEADERS
from imgclf.model.images import ImageError
from imgclf.queue.base import (
    JobFailedError,
    JobTimeoutError,
    QueueError,
    QueueFullError,
    QueueUnavailableError,
)
from imgclf.queue.models import (
    ModelError,
    ModelUnavailableError,
    PromotionError,
    UnknownModelError,
)

logger = logging.getLogger("imgclf.api")

_DESCRIPTIONS = {
    400: "The request is not acceptable (the message says why)",
    401: "Not authenticated, or the token is invalid or expired",
    403: "Authenticated, but not allowed to do this",
    404: "No such resource (or not yours)",
    413: "Too large (the message gives the limit)",
    422: "The request's parameters or body are invalid (the message names each field)",
    429: "Too many attempts, or too many of your uploads waiting; retry after the Retry-After "
    "seconds",
    503: "A dependency is unavailable; retry later",
    504: "No answer in time",
    507: "Not stored: the disk is full or unwritable (retry later), or your storage or "
    "feedback quota is used up (the message says which)",
}


# Set in a request's scope when its answer is a 507 for the caller's own full quota, which the
# metrics count apart (``imgclf_quota_refusals_total``): one user at their quota is no fault of
# the service, and must not page whoever runs it as a full disk does.
QUOTA_REFUSED = "imgclf.quota_refused"
RETRY_SHORTLY = {"Retry-After": "5"}
CREDENTIALS_ERROR = "Could not validate credentials"
BEARER = {"WWW-Authenticate": "Bearer"}
# Errors raised below the routes: the one place that decides their HTTP answers.
DOMAIN_ERRORS: tuple[type[Exception], ...] = (
    QueueError,
    ModelError,
    ImageError,
    UploadFormError,
    StorageFullError,
    RecordingUnavailableError,
    AccountGoneError,
    EmailTaken,
    PredictionNotFound,
    FeedbackQuotaExceeded,
)


def http_answer(error: Exception) -> tuple[int, str, dict[str, str] | None]:
    """Status, message and headers for one of ``DOMAIN_ERRORS``."""
    match error:
        case QueueFullError(retry_after_s=retry_after_s):
            return 503, f"The service is busy: {error}.", {"Retry-After": str(retry_after_s)}
        case QueueUnavailableError():
            return 503, f"The model service is unavailable: {error}.", RETRY_SHORTLY
        case JobTimeoutError():
            return 504, f"The model did not answer in time: {error}.", None
        case UnknownModelError():
            return 404, str(error), None
        case ModelUnavailableError() | PromotionError():
            return 503, str(error), RETRY_SHORTLY
        case (
            JobFailedError(status_code=status_code)
            | ImageError(status_code=status_code)
            | UploadFormError(status_code=status_code)
        ):
            return status_code, str(error), None
        case StorageFullError() | FeedbackQuotaExceeded():  # the disk, or the user's quota
            return 507, str(error), None
        case RecordingUnavailableError():
            return 503, str(error), RETRY_SHORTLY
        case AccountGoneError():  # deleted since its token was issued, or its login began
            return 401, CREDENTIALS_ERROR, BEARER
        case EmailTaken():
            return 400, "The user with this email already exists", None
        case PredictionNotFound(args=(detail,)):
            return 404, detail, None
    raise error


class ErrorResponse(BaseModel):
    detail: str


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route: each status with the ``ErrorResponse`` schema."""
    return {
        code: {
            "model": ErrorResponse,
            "description": _DESCRIPTIONS.get(code, HTTPStatus(code).phrase),
        }
        for code in status_codes
    }


def _location(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc)


def validation_message(errors: Sequence[Any]) -> str:
    """Pydantic's error list as one line a person can act on, without echoing input values."""
    parts: list[str] = []
    for error in errors:
        loc = error.get("loc", ())
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "")
            parts.append(f"body: malformed JSON ({reason})" if reason else "body: malformed JSON")
            continue
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{_location(loc)}: {message}" if loc else message)
    return "; ".join(parts) or "Invalid request"


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, QuotaExceededError | FeedbackQuotaExceeded):
        request.scope[QUOTA_REFUSED] = exc.quota
    status_code, detail, headers = http_answer(exc)
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_message(exc.errors())}, status_code=422)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = str(request.scope.get("request_id", ""))
    logger.error(
        "Unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"request_id": request_id},
    )
    # This answer is sent from outside the other middleware, so it carries their headers itself.
    headers = dict(SECURITY_HEADERS)
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse({"detail": "Internal server error"}, status_code=500, headers=headers)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database went away (restart, network, pool exhausted): a clear 503, not a 500.
    The statement's parameters are hidden by the engine, so the log shows no user data."""
    logger.error("Database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "The database is unavailable; retry shortly."},
        status_code=503,
        headers=RETRY_SHORTLY,
    )


def _document_one_error_shape(app: FastAPI) -> None:
    """Make the OpenAPI schema tell the truth about 422s on every route, even one that did not
    declare its 422: FastAPI documents its own list-of-errors shape, which we never send."""
    build_schema = app.openapi
    error_ref = "#/components/schemas/ErrorResponse"

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build_schema()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if ({"401", "422"} & responses.keys()) and "503" not in responses:
                    # Every route that reads the database may meet it unavailable.
                    responses["503"] = {
                        "description": _DESCRIPTIONS[503],
                        "content": {"application/json": {"schema": {"$ref": error_ref}}},
                    }
                response = responses.get("422")
                if response is None:
                    continue
                response["description"] = _DESCRIPTIONS[422]
                response["content"] = {"application/json": {"schema": {"$ref": error_ref}}}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorResponse", ErrorResponse.model_json_schema())
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for domain_error in DOMAIN_ERRORS:
        app.add_exception_handler(domain_error, _domain_error)
    for database_error in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(database_error, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
    _document_one_error_shape(app)
