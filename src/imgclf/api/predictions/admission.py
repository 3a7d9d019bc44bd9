"""Admission control: refuse new uploads at the door while this process is already full.

Only callers with a token this server signed get in (401 otherwise, before anything is held),
and each at most ``IMGCLF_MAX_PENDING_PER_USER`` uploads at once, async jobs included until
they finish (429: one account cannot take the whole queue from the others). Full by count
(``IMGCLF_MAX_PENDING`` jobs awaited for the model the request names, so that a flood for one
model does not lock the others out) or by bytes (``IMGCLF_MAX_PENDING_BYTES`` of uploads being
received, checked or waited on, async jobs included until they finish). The queue refuses a
job past ``max_pending`` too, but only after the upload has been read, parsed and checked, and
the caller authenticated: under overload that work is what makes a refusal slow. And a count
alone does not bound memory: 256 uploads of 20 MB are 5 GB. Here a refusal costs a comparison
and a small JSON answer.
"""

from __future__ import annotations

from collections import Counter

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from imgclf.api.errors import BEARER, CREDENTIALS_ERROR
from imgclf.api.middleware import MULTIPART_OVERHEAD_BYTES, is_upload
from imgclf.api.security import InvalidTokenError, VerifiedTokens
from imgclf.api.state import app_state

MB = 2**20


class PendingBytes:
    """The upload bytes this process holds for requests and async jobs in flight, in all and
    for each user: one account's uploads may take at most ``per_user_limit`` of them, so that
    holding the whole budget (uploads announced large, then sent slowly) takes several."""

    def __init__(self, limit: int, per_user_limit: int) -> None:
        self.limit = limit
        self.per_user_limit = per_user_limit
        self.held = 0
        self._by_user = Counter[int]()

    # One upload always fits when nothing is held (by anyone, or by this user against their
    # share), however large: a limit below the upload size never refuses everything.
    def fits(self, size: int) -> bool:
        return not self.held or self.held + size <= self.limit

    def fits_user(self, size: int, user_id: int) -> bool:
        mine = self._by_user[user_id]
        return not mine or mine + size <= self.per_user_limit

    def held_by(self, user_id: int) -> int:
        return self._by_user.get(user_id, 0)

    def hold(self, size: int, user_id: int) -> None:
        """Hold bytes already in this process (an accepted job's image), fitting or not."""
        self.held += size
        self._by_user[user_id] += size

    def release(self, size: int, user_id: int) -> None:
        self.held -= size
        self._by_user[user_id] -= size
        if self._by_user[user_id] <= 0:
            del self._by_user[user_id]  # a user with nothing in flight takes no room


class WaitingPerUser:
    """How many uploads each user has in this process: requests being served, and async jobs
    until they finish."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting = Counter[int]()

    def try_hold(self, user_id: int) -> bool:
        if self._waiting[user_id] >= self.limit:
            return False
        self._waiting[user_id] += 1
        return True

    def hold(self, user_id: int) -> None:
        """One more for a user already let in (their accepted job outlives its request)."""
        self._waiting[user_id] += 1

    def release(self, user_id: int) -> None:
        self._waiting[user_id] -= 1
        if self._waiting[user_id] <= 0:
            del self._waiting[user_id]  # a user with nothing waiting takes no room


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and scope["method"] == "POST" and is_upload(scope["path"])):
            await self.app(scope, receive, send)
            return
        state = app_state(scope["app"])
        settings = state.settings
        # Checked before any byte is held: a stranger's body, announced and never sent, would
        # otherwise hold the budget for as long as the connection stays open.
        headers = Headers(scope=scope)
        user_id = _signed_user(headers, state.tokens)
        if user_id is None:
            # The routes' own answers: no bearer token at all, or one that is not valid.
            has_token = headers.get("authorization", "").lower().startswith("bearer ")
            detail = CREDENTIALS_ERROR if has_token else "Not authenticated"
            response = JSONResponse({"detail": detail}, 401, headers=BEARER)
            await response(scope, receive, send)
            return
        if not state.waiting.try_hold(user_id):
            state.metrics.reject("UserBusy")
            yours = (
                f"You already have {settings.max_pending_per_user} images waiting for an "
                "answer; send more once some of them are answered."
            )
            await _yours_first(scope, receive, send, yours)
            return
        try:
            await self._admit(scope, receive, send, user_id)
        finally:
            state.waiting.release(user_id)

    async def _admit(self, scope: Scope, receive: Receive, send: Send, user_id: int) -> None:
        """The model's count and the process's bytes, then the route."""
        state = app_state(scope["app"])
        settings, queue = state.settings, state.queue
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
        if not pending.fits_user(size, user_id):
            state.metrics.reject("UserBusy")
            yours = (
                f"You already have {pending.held_by(user_id) / MB:.1f} MB of images in flight "
                f"here (the limit is {pending.per_user_limit / MB:g} MB an account); send more "
                "once some of them are answered."
            )
            await _yours_first(scope, receive, send, yours)
            return
        if not pending.fits(size):
            busy = (
                f"{pending.held / MB:.1f} MB of images are already in flight here "
                f"(the limit is {pending.limit / MB:g} MB)"
            )
            await _refuse(scope, receive, send, busy)
            return
        pending.hold(size, user_id)
        try:
            await self.app(scope, receive, send)
        finally:
            pending.release(size, user_id)


def _signed_user(headers: Headers, tokens: VerifiedTokens) -> int | None:
    """The user of the token this server signed that the request carries (as the route checks
    it, without the database), or None."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    try:
        return tokens.user_id(token)
    except InvalidTokenError:
        return None


async def _yours_first(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
    """429: the caller's own uploads in flight take their share already."""
    response = JSONResponse({"detail": detail}, 429, headers={"Retry-After": "1"})
    await response(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, busy: str) -> None:
    app_state(scope["app"]).metrics.reject("QueueFullError")
    response = JSONResponse(
        {"detail": f"The service is busy: {busy}; retry shortly."},
        status_code=503,
        headers={"Retry-After": "1"},
    )
    await response(scope, receive, send)
