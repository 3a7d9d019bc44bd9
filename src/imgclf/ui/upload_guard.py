"""Who may upload to the UI server, and how much it holds for them.

Streamlit keeps each file sent to ``PUT /_stcore/upload_file/<session>/<file>`` in memory until
its page lets go of it, for any live session, under any file id, checking only each file's size:
a stranger who opened the page (no login) could make the server hold 19 MB per request, without
end. Here, in front of that route, a session must be logged in (the page registers it at each
run; ``imgclf.ui.session``), and the files all sessions hold together have a budget.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from streamlit import config
from streamlit.runtime import Runtime
from streamlit.runtime.stats import CacheStat

from imgclf.http_protocol import BodyTooSlow, timed_receive
from imgclf.settings import get_settings

_UPLOAD_PATH = re.compile(r"/_stcore/upload_file/([^/]+)/[^/]+$")  # under any baseUrlPath
# All sessions' uploads held at once: this many of the largest upload the page takes.
BUDGET_IN_LARGEST_UPLOADS = 8
# Sessions remembered as logged in; past it the oldest is forgotten (and uploads again once its
# page runs again). Far more than one UI process serves at once.
MAX_SESSIONS = 4096


class LoggedInSessions:
    """Streamlit session ids whose page has a login, as their last run found it."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, None] = OrderedDict()
        self._max = max_sessions

    def mark(self, session_id: str, logged_in: bool) -> None:
        with self._lock:
            if not logged_in:
                self._sessions.pop(session_id, None)
                return
            self._sessions[session_id] = None
            self._sessions.move_to_end(session_id)
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            return session_id in self._sessions


LOGGED_IN = LoggedInSessions()


def held_upload_bytes() -> int:
    """What Streamlit holds of uploaded files, every session together."""
    stats = Runtime.instance().uploaded_file_mgr.get_stats()
    return sum(
        stat.byte_length
        for family in stats.values()
        for stat in family
        if isinstance(stat, CacheStat)
    )


def upload_budget_bytes() -> int:
    """``BUDGET_IN_LARGEST_UPLOADS`` of Streamlit's ``server.maxUploadSize`` (megabytes)."""
    largest_mb = int(config.get_option("server.maxUploadSize"))
    return BUDGET_IN_LARGEST_UPLOADS * largest_mb * 2**20


class UploadGuard:
    """ASGI middleware: uploads from logged-in pages only, within the budget of bytes held."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Declared bytes of the uploads being received: Streamlit counts a file only once it
        # is whole, so 24 uploads sent at once all passed a check of what was held (456 MB
        # held against a budget of 160). Checked and added with no await in between.
        self.arriving = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _UPLOAD_PATH.search(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] != "PUT":
            await self.app(scope, receive, send)
            return
        size = _declared_size(scope)
        refusal = self._refusal(match.group(1), size)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        assert size is not None  # refused above otherwise
        self.arriving += size
        try:
            await self._receive_in_time(scope, receive, send)
        finally:
            self.arriving -= size

    async def _receive_in_time(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The upload, its body timed as the API times one (``IMGCLF_BODY_PAUSE_S``,
        ``IMGCLF_BODY_MIN_RATE_KIB_S``). Streamlit reads it with no timeout, and the bytes it
        declares are held in the budget meanwhile: eight uploads that sent nothing kept every
        other page's uploads refused for as long as their connections stayed open."""
        settings = get_settings()
        receive_in_time = timed_receive(
            receive, pause_s=settings.body_pause_s, min_rate=settings.body_min_rate_kib_s * 1024
        )
        answered = False

        async def send_noted(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_in_time, send_noted)
        except BodyTooSlow as slow:
            if answered:
                raise
            await JSONResponse({"detail": slow.detail}, status_code=408)(scope, receive, send)

    def _refusal(self, session_id: str, size: int | None) -> JSONResponse | None:
        if session_id not in LOGGED_IN:
            return JSONResponse({"detail": "Log in to upload images."}, status_code=401)
        if size is None:
            return JSONResponse(
                {"detail": "An upload needs a Content-Length header."}, status_code=411
            )
        if held_upload_bytes() + self.arriving + size > upload_budget_bytes():
            return JSONResponse(
                {"detail": "The page holds too many uploads just now; try again in a minute."},
                status_code=503,
                headers={"Retry-After": "60"},
            )
        return None


def _declared_size(scope: Scope) -> int | None:
    try:
        return int(dict(scope["headers"]).get(b"content-length", b""))
    except ValueError:
        return None
