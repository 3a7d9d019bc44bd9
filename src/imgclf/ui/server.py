"""The UI server: the Streamlit page (``app.py``) and, beside it, the two routes that set and
clear the login cookie (``imgclf.ui.login_cookie``), the guard in front of Streamlit's upload
route (``imgclf.ui.upload_guard``), and none of Streamlit's own figures; safe headers on every
answer. ``imgclf ui`` runs this file (through ``imgclf.ui.page_server``)."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from imgclf.heap import return_large_blocks
from imgclf.http_protocol import SecurityHeadersMiddleware

# What the page imports (pandas, Altair, the API's client), imported as the server starts: the
# page's first run would import it for its first visitor, who waited 1.95 s for a login form
# that later visitors get in 0.2 s. (classify_view, whose cache Streamlit makes when it is
# imported, waits for the page: the cache belongs to the running server.)
from imgclf.ui import admin_view, history_view, login_view  # noqa: F401
from imgclf.ui.login_cookie import ROUTES
from imgclf.ui.upload_guard import UploadGuard

# The previews decode uploads of up to 50 MP in this process (imgclf.ui.preview): their memory
# goes back to the system after them.
return_large_blocks()

# Streamlit's figures (pages open, time spent on them, bytes of uploads held) answer anyone who
# asks; the page never reads them, and strangers are shown nothing internal.
_FIGURES = re.compile(r"/+_stcore/+metrics/*")


# What the API's answers carry, but the cache: Streamlit names its scripts and styles by their
# content and lets browsers keep them, and no answer of the UI server carries a token. No other
# site may frame the page (and have a logged-in user click through it).
PAGE_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
)


class HideFigures:
    """ASGI middleware: 404 for Streamlit's ``/_stcore/metrics``, however it is spelled."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _FIGURES.search(scope.get("path", "")):
            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


app = st.App(
    Path(__file__).with_name("app.py"),
    routes=ROUTES,
    middleware=[
        Middleware(SecurityHeadersMiddleware, headers=PAGE_HEADERS),
        Middleware(HideFigures),
        Middleware(UploadGuard),
    ],
)
