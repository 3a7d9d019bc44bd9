"""Pure ASGI middleware (streaming bodies pass untouched): request ids, security headers, body
size caps."""

from __future__ import annotations

import logging
import time

from opentelemetry import trace
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgclf.http_protocol import BodyTooSlow, timed_receive
from imgclf.logs import accepted_request_id, current_request_id
from imgclf.tracing import tracing

REQUEST_ID_HEADER = "X-Request-ID"
access_logger = logging.getLogger("imgclf.access")

# The scope's key for when the request reached the app (``time.perf_counter()``), set by the
# outermost middleware: the answer's Server-Timing counts from there.
RECEIVED_AT = "imgclf.received_at"


class RequestIdMiddleware:
    """The outermost layer: gives each request its id (the client's ``X-Request-ID`` when it is
    a sane one), makes it current for the code and the logs that handle the request, puts it in
    the answer's ``X-Request-ID`` header and, with ``access_log``, logs one line per request.

    uvicorn's own access line is written outside the request's context and could not name its
    id; this one replaces it.
    """

    def __init__(self, app: ASGIApp, *, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        # Also in the scope, for the answer to an unexpected error (sent from outside here).
        scope["request_id"] = request_id
        token = current_request_id.set(request_id)
        if tracing():  # FastAPI's own server span is current here: name the request
            trace.get_current_span().set_attribute("imgclf.request_id", request_id)
        status = 500  # what the client gets if the app fails before answering
        started = scope[RECEIVED_AT] = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                access_logger.info(
                    "%s %s %d %.1f ms",
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - started) * 1000,
                )
            current_request_id.reset(token)


# JSON and form bodies here are small (a feedback is at most 2000 characters). Only the upload
# routes take large ones: the upload setting plus room for the multipart framing. The route,
# not the Content-Type, decides: a client that calls its JSON body multipart is still capped.
MAX_BODY_BYTES = 64 * 1024
MULTIPART_OVERHEAD_BYTES = 64 * 1024
UPLOAD_PATHS = frozenset({"/model/predict", "/model/jobs"})


def is_upload(path: str) -> bool:
    """Whether ``path`` is an upload route's, in either spelling (``imgclf.api.paths`` serves
    ``/model/predict/`` as ``/model/predict``: a check of one spelling is no check)."""
    return path.rstrip("/") in UPLOAD_PATHS


# The unread rest of a refused body would otherwise be read (and dropped) to reach the next
# request on the connection: closing it costs the client a reconnect, us nothing.
CLOSE = {"Connection": "close"}


class BodySizeLimitMiddleware:
    """Refuse request bodies over their cap with 413 before they are read into memory, and
    bodies that stop arriving with 408.

    Neither uvicorn nor FastAPI caps a body by default, so without this one large body would
    be buffered whole. The check runs on the declared Content-Length and again on the bytes
    as they arrive (a chunked body declares nothing). Nor does either time a body out: an
    upload that stalls would hold its sender's admission (a place among their uploads, its
    bytes in the process's budget) for as long as the connection stays open, so its body is
    timed (``imgclf.http_protocol.timed_receive``).
    """

    def __init__(
        self, app: ASGIApp, *, max_upload_bytes: int, body_pause_s: float, min_rate: float
    ) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.body_pause_s = body_pause_s
        self.min_rate = min_rate

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if is_upload(scope["path"]):
            limit = self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
            return (
                limit,
                f"The upload is larger than the {self.max_upload_bytes / 2**20:g} MB limit.",
            )
        return (
            MAX_BODY_BYTES,
            f"The request body is larger than the {MAX_BODY_BYTES // 1024} KiB limit "
            "(only image uploads may be larger).",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, message = self._limit(scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response = JSONResponse({"detail": message}, status_code=413, headers=CLOSE)
            await response(scope, receive, send)
            return
        timed = timed_receive(receive, pause_s=self.body_pause_s, min_rate=self.min_rate)
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            try:
                message_in = await timed()
            except BodyTooSlow as slow:
                raise HTTPException(408, slow.detail, headers=CLOSE) from None
            if message_in["type"] == "http.request":
                received += len(message_in.get("body", b""))
                if received > limit:
                    # An HTTPException, so the app's error handler answers it in the usual shape.
                    raise HTTPException(413, message, headers=CLOSE)
            return message_in

        await self.app(scope, receive_within_limit, send)
