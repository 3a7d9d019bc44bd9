"""The login kept by the browser, so that a reload or a new tab stays logged in.

The page keeps its refresh token in an HttpOnly cookie: the browser sends it with the page's
websocket (``st.context.cookies`` reads it there), and no script on the page can read it. A
Streamlit script cannot set a cookie itself, so it hands the token to the small routes beside
it (``imgclf.ui.server``) through a one-time code: the page posts the code (never in a URL),
and the route's answer sets the cookie. The code lives a minute and works once.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass

import streamlit as st
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

COOKIE = "imgclf_login"
KEEP_PATH = "/imgclf/login-cookie"
FORGET_PATH = "/imgclf/login-cookie/forget"
# Sent by the page's own script: a form on another site cannot add it (and a fetch with it
# needs a CORS preflight, which these routes refuse).
REQUESTED_BY = ("X-Requested-By", "imgclf")
HANDOFF_TTL_S = 60.0
# The page sends {"code": "<32 characters>"}. Anyone can add the header above, so a body is
# read only up to this size: the server would otherwise hold whatever a client sends (and
# JSON nested deeper than Python's recursion limit would fail the route).
MAX_BODY_BYTES = 256


@dataclass(frozen=True)
class Handed:
    refresh_token: str
    max_age_s: int | None
    deadline: float


class Handoff:
    """One-time codes for refresh tokens on their way to the cookie; thread-safe (the page's
    scripts run in threads, the routes on the server's loop)."""

    def __init__(self, ttl_s: float = HANDOFF_TTL_S) -> None:
        self._lock = threading.Lock()
        self._handed: dict[str, Handed] = {}
        self._ttl_s = ttl_s

    def put(self, refresh_token: str, max_age_s: int | None) -> str:
        code = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._handed = {k: v for k, v in self._handed.items() if v.deadline > now}
            self._handed[code] = Handed(refresh_token, max_age_s, now + self._ttl_s)
        return code

    def waiting(self, code: str) -> bool:
        with self._lock:
            return code in self._handed

    def take(self, code: str) -> Handed | None:
        with self._lock:
            handed = self._handed.pop(code, None)
        return handed if handed is not None and handed.deadline > time.monotonic() else None


# One per UI process: the page's scripts and the cookie routes run in it and share it.
HANDOFF = Handoff()


def saved_refresh_token() -> str | None:
    """The refresh token this browser sent with the page, if any."""
    value = st.context.cookies.get(COOKIE)
    return value if isinstance(value, str) and value else None


def _post(path: str, body: dict[str, str] | None = None) -> None:
    """A same-origin POST from the page (st.html runs the script in the page itself)."""
    options = {
        "method": "POST",
        "credentials": "same-origin",
        "headers": {"Content-Type": "application/json", REQUESTED_BY[0]: REQUESTED_BY[1]},
        "body": json.dumps(body or {}),
    }
    st.html(
        f"<script>fetch({json.dumps(path)}, {json.dumps(options)});</script>",
        unsafe_allow_javascript=True,
    )


def keep_in_browser(code: str) -> None:
    """Have the browser claim the refresh token handed over as ``code``, while it waits."""
    if HANDOFF.waiting(code):
        _post(KEEP_PATH, {"code": code})


def forget_in_browser() -> None:
    _post(FORGET_PATH)


# The routes beside the page ---------------------------------------------------------------


def _refused(request: Request) -> JSONResponse | None:
    """Only the page's own script may call these routes."""
    if request.headers.get(REQUESTED_BY[0]) != REQUESTED_BY[1]:
        return JSONResponse({"detail": "Not from this page"}, status_code=403)
    if request.headers.get("sec-fetch-site", "same-origin") != "same-origin":
        return JSONResponse({"detail": "Not from this page"}, status_code=403)
    return None


class BodyTooLarge(Exception):
    pass


async def _small_body(request: Request) -> bytes:
    """The request's body, refused from its declared length or as soon as it grows too long."""
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge
    return body


async def keep_login(request: Request) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    try:
        code = json.loads(await _small_body(request)).get("code")
    except BodyTooLarge:
        return JSONResponse(
            {"detail": f"The body must be at most {MAX_BODY_BYTES} bytes"}, status_code=413
        )
    except (ValueError, AttributeError):
        code = None
    handed = HANDOFF.take(code) if isinstance(code, str) else None
    if handed is None:
        return JSONResponse({"detail": "Unknown or expired code"}, status_code=404)
    response = Response(status_code=204)
    response.set_cookie(
        COOKIE,
        handed.refresh_token,
        max_age=handed.max_age_s,
        path="/",
        httponly=True,  # no script on the page can read it
        samesite="strict",  # never sent by another site's page
        # Behind a proxy that ends TLS the scheme here is http: its X-Forwarded-Proto is
        # believed, as it can only make the cookie stricter.
        secure="https" in (request.url.scheme, request.headers.get("x-forwarded-proto")),
    )
    return response


async def forget_login(request: Request) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


ROUTES: list[BaseRoute] = [
    Route(KEEP_PATH, keep_login, methods=["POST"]),
    Route(FORGET_PATH, forget_login, methods=["POST"]),
]
