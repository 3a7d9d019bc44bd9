"""Admission control: refuse new uploads at the door while this process is already full.

Only callers with a token this server signed get in (401 otherwise, before anything is held).
Full by count (``IMGCLF_MAX_PENDING`` jobs awaited for the model the request names, so that a
flood for one model does not lock the others out) or by bytes (``IMGCLF_MAX_PENDING_BYTES`` of
uploads being received, checked or waited on, async jobs included until they finish). The
queue refuses a job past ``max_pending`` too, but only after the upload has been read, parsed
and checked, and the caller authenticated: under overload that work is what makes a refusal
slow. And a count alone does not bound memory: 256 uploads of 20 MB are 5 GB. Here a refusal
costs a comparison and a small JSON answer.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from imgclf.api.errors import BEARER, CREDENTIALS_ERROR
from imgclf.api.middleware import MULTIPART_OVERHEAD_BYTES, UPLOAD_PATHS
from imgclf.api.security import InvalidTokenError, VerifiedTokens
from imgclf.api.state import app_state

MB = 2**20


class PendingBytes:
    """The upload bytes this process holds for requests and async jobs in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def try_hold(self, size: int) -> bool:
        """Hold ``size`` more bytes if they fit (one upload always fits when nothing is held,
        however large, so a limit below the upload size never refuses everything)."""
        if self.held and self.held + size > self.limit:
            return False
        self.held += size
        return True

    def hold(self, size: int) -> None:
        """Hold bytes already in this process (an accepted job's image), fitting or not."""
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS
        ):
            await self.app(scope, receive, send)
            return
        state = app_state(scope["app"])
        settings, queue = state.settings, state.queue
        # Checked before any byte is held: a stranger's body, announced and never sent, would
        # otherwise hold the budget for as long as the connection stays open.
        if not _signed(Headers(scope=scope), state.tokens):
            response = JSONResponse({"detail": CREDENTIALS_ERROR}, 401, headers=BEARER)
            await response(scope, receive, send)
            return
        if queue is not None:
            # Read as the route reads it (Starlette's parser: the last of repeated values); a
            # name other than the route's would let a full model's uploads in.
            model = QueryParams(scope["query_string"]).get("model") or queue.default_model
            if queue.in_flight_for(model) >= settings.max_pending:
                busy = f"{settings.max_pending} images are already waiting for {model}"
                await _refuse(scope, receive, send, busy)
                return
        # A body that declares no length may still be as large as the upload limit allows.
        declared = Headers(scope=scope).get("content-length", "")
        size = (
            int(declared)
            if declared.isdigit()
            else settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
        )
        pending = state.pending_bytes
        if not pending.try_hold(size):
            busy = (
                f"{pending.held / MB:.1f} MB of images are already in flight here "
                f"(the limit is {pending.limit / MB:g} MB)"
            )
            await _refuse(scope, receive, send, busy)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            pending.release(size)


def _signed(headers: Headers, tokens: VerifiedTokens) -> bool:
    """Whether the request carries a token this server signed (as the route checks it, without
    the database)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    try:
        tokens.user_id(token)
    except InvalidTokenError:
        return False
    return True


async def _refuse(scope: Scope, receive: Receive, send: Send, busy: str) -> None:
    app_state(scope["app"]).metrics.reject("QueueFullError")
    response = JSONResponse(
        {"detail": f"The service is busy: {busy}; retry shortly."},
        status_code=503,
        headers={"Retry-After": "1"},
    )
    await response(scope, receive, send)
