"""The UI server: the Streamlit page (``app.py``) and, beside it, the two routes that set and
clear the login cookie (``imgclf.ui.login_cookie``), the guard in front of Streamlit's upload
route (``imgclf.ui.upload_guard``), and none of Streamlit's own figures; safe headers on every
answer. ``imgclf ui`` runs this file (through ``imgclf.ui.page_server``)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from imgclf.api.auth.throttle import client_network
from imgclf.heap import return_large_blocks
from imgclf.http_protocol import SecurityHeadersMiddleware
from imgclf.settings import get_settings

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

logger = logging.getLogger(__name__)

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


# Each open page is a websocket that may hold a message of up to 2 MB while it arrives
# (``imgclf.ui.launch.MAX_MESSAGE_MB``): the pages one client may keep open are bounded. Not
# all pages together: eight addresses holding them all would lock out every other visitor.
_PAGE_STREAM = re.compile(r"/+_stcore/+stream/*$")  # under any server.baseUrlPath


class LimitPages:
    """ASGI middleware: refuses (403) a page's websocket beyond ``IMGCLF_UI_MAX_PAGES_PER_CLIENT``
    open from its client (an IPv4 address, an IPv6 /64); the page shows it cannot connect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.most = get_settings().ui_max_pages_per_client
        self.open_per_client: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or not _PAGE_STREAM.search(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        client = client_network(scope["client"][0] if scope.get("client") else "")
        opened = self.open_per_client.get(client, 0)
        if opened >= self.most:
            logger.warning("refused a page's connection from %s: too many open", client)
            await send({"type": "websocket.close", "code": 1008})
            return
        self.open_per_client[client] = opened + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open_per_client[client] -= 1
            if not self.open_per_client[client]:
                del self.open_per_client[client]


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
        Middleware(LimitPages),
        Middleware(HideFigures),
        Middleware(UploadGuard),
    ],
)
