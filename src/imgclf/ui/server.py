"""The UI server: the Streamlit page (``app.py``) and, beside it, the two routes that set and
clear the login cookie (see ``imgclf.ui.login_cookie``). ``imgclf ui`` runs this file."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imgclf.ui.login_cookie import COOKIE, FORGET_PATH, HANDOFF, KEEP_PATH, REQUESTED_BY


def _refused(request: Request) -> JSONResponse | None:
    """Only the page's own script may call these routes."""
    if request.headers.get(REQUESTED_BY[0]) != REQUESTED_BY[1]:
        return JSONResponse({"detail": "Not from this page"}, status_code=403)
    if request.headers.get("sec-fetch-site", "same-origin") != "same-origin":
        return JSONResponse({"detail": "Not from this page"}, status_code=403)
    return None


async def keep_login(request: Request) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    try:
        code = (await request.json()).get("code")
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
        secure=request.url.scheme == "https",
    )
    return response


async def forget_login(request: Request) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


app = st.App(
    Path(__file__).with_name("app.py"),
    routes=[
        Route(KEEP_PATH, keep_login, methods=["POST"]),
        Route(FORGET_PATH, forget_login, methods=["POST"]),
    ],
)
