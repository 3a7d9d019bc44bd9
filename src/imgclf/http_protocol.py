"""uvicorn's httptools protocol with caps on each request head: its size, its URL, its time.

Neither uvicorn nor httptools caps a request head, and both join its pieces on the event loop
(``bytes +=`` per chunk, quadratic), so one connection sending a 160 MB header stalled every
other request of the process for seconds at a time. Here the bytes of a head are counted as
they arrive: past ``IMGCLF_MAX_HEADER_BYTES`` the request gets 431, a URL past
``IMGCLF_MAX_URL_BYTES`` 414, and a head still unfinished ``IMGCLF_HEADER_TIMEOUT_S`` after its
connection opened (or after its first byte, on a kept-alive one) 408; then the connection is
closed. Bodies are not counted here: the app caps them per route; a connection whose answer
was sent before its body was read ends. An answer the client stops reading for
``IMGCLF_SEND_PAUSE_S`` ends its connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import httptools
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from imgclf.settings import get_settings

logger = logging.getLogger("imgclf.http")
# On every answer of the API, this module's refusals included.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    # Answers carry tokens and personal data: no shared or browser cache may keep them.
    ("Cache-Control", "no-store"),
)
# After a refusal the client may still be sending: its bytes are read and dropped for a moment,
# so that it can read the answer (closing on unread bytes resets the connection and loses it).
LINGER_S = 1.0


class SecurityHeadersMiddleware:
    """ASGI middleware: ``headers`` (the API's ``SECURITY_HEADERS`` by default) on every
    answer, where the route did not set its own."""

    def __init__(self, app: ASGIApp, headers: Sequence[tuple[str, str]] = SECURITY_HEADERS) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooSlow(Exception):
    """A request's body stopped arriving, or arrives too slowly (``timed_receive``)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def timed_receive(receive: Receive, *, pause_s: float, min_rate: float) -> Receive:
    """``receive`` with a body timer: each piece within ``pause_s`` of the one before, and,
    since a trickle (a byte every few seconds) never pauses that long, the whole body within
    ``pause_s`` of its start plus a second for each ``min_rate`` bytes received, as Apache's
    mod_reqtimeout sets it. Neither uvicorn nor Starlette times a body: a stalled one holds
    whatever its request was admitted with for as long as the connection stays open. Raises
    ``BodyTooSlow``; after the body, ``receive`` waits for the client to go, untimed."""
    started = time.monotonic()
    received = 0
    body_done = False

    async def receive_in_time() -> Message:
        nonlocal received, body_done
        if body_done:
            return await receive()
        deadline = started + pause_s + received / min_rate
        wait_s = min(pause_s, deadline - time.monotonic())
        try:
            async with asyncio.timeout(wait_s):  # a timer, not a task as wait_for
                message = await receive()
        except TimeoutError:
            if wait_s >= pause_s:
                raise BodyTooSlow(
                    f"The request's body stopped arriving for {pause_s:g} s."
                ) from None
            raise BodyTooSlow(
                f"The request's body arrived too slowly: {received / 1024:.1f} KiB in "
                f"{time.monotonic() - started:.0f} s, where {pause_s:g} s and a second more for "
                f"each {min_rate / 1024:g} KiB are allowed."
            ) from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
        return message

    return receive_in_time


class HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing a head that is refused."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def refusal(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 answer in the API's error shape, closing the connection."""
    body = json.dumps({"detail": detail}).encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name.lower()}: {value}" for name, value in SECURITY_HEADERS),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _kb(size: int) -> str:
    return f"{size / 1024:g} KB"


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=LimitedHttpToolsProtocol)``; limits come from the settings."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_head_bytes = settings.max_header_bytes
        self.max_url_bytes = settings.max_url_bytes
        self.head_timeout_s = settings.header_timeout_s
        self.reading_head = True
        self.head_bytes = 0
        # After the head: the body's bytes, and the others (chunk sizes, trailers).
        self.body_bytes = 0
        self.framing_bytes = 0
        self.fed_body_bytes = 0  # of the bytes being fed now
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False
        self.send_pause_s = settings.send_pause_s
        self.send_timer: asyncio.TimerHandle | None = None

    # Connection events ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._disarm_send_timer()
        super().connection_lost(exc)

    # The transport's write buffer is full while the client reads nothing of the answer: the
    # request's task, its buffers and an open file (an image being sent) would wait for as long
    # as the connection stays open, so after ``IMGCLF_SEND_PAUSE_S`` the connection is dropped.

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.send_timer is None:
            self.send_timer = self.loop.call_later(self.send_pause_s, self._send_stalled)

    def resume_writing(self) -> None:
        self._disarm_send_timer()
        super().resume_writing()

    def _send_stalled(self) -> None:
        self.send_timer = None
        client = self.client[0] if self.client else "unknown"
        logger.info(
            "dropped the connection of %s: it read nothing of its answer for %g s",
            client,
            self.send_pause_s,
        )
        self.transport.abort()  # close() would wait to send what the client does not read

    def _disarm_send_timer(self) -> None:
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # lingering: dropped unread
        self._unset_keepalive_if_required()
        if not self.reading_head:
            self._feed_body(data)
            return
        self._arm_head_timer()
        budget = self.max_head_bytes - self.head_bytes
        if len(data) <= budget:
            self.head_bytes += len(data)
            self._feed(data)
            return
        # Over budget unless the head ends within it: feed what the budget allows, and the
        # rest only if that finished the head (the rest is then body or the next request).
        self.head_bytes += budget
        self._feed(data[:budget])
        if self.refused or self.transport.is_closing():
            return
        if self.reading_head:
            detail = f"The request's headers are larger than the {_kb(self.max_head_bytes)} limit."
            self._refuse(HeadRefused(431, detail))
            return
        self.data_received(data[budget:])

    def _feed_body(self, data: bytes) -> None:
        """Bytes after a head: the body, with a chunked body's framing and trailers. httptools
        joins a trailer's pieces as it does a header's, and uvicorn keeps each trailer, so
        endless trailers after a body's last chunk grew the process by their size (300 MB in
        a second); what is not body counts against the head's cap, plus as much as the body
        for chunk sizes (chunks of 5 bytes or more fit)."""
        self.fed_body_bytes = 0
        self._feed(data)
        if self.refused or self.transport.is_closing():
            return
        others = len(data) - self.fed_body_bytes
        if self.reading_head:  # the message ended: the rest began the next head
            self.head_bytes += others
            over = self.head_bytes > self.max_head_bytes
        else:
            self.framing_bytes += others
            over = self.framing_bytes > self.max_head_bytes + self.body_bytes
        if over:
            limit = _kb(self.max_head_bytes)
            self._refuse(
                HeadRefused(431, f"The request's headers are larger than the {limit} limit.")
            )

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        self.fed_body_bytes += len(body)
        super().on_body(body)

    def _feed(self, data: bytes) -> None:
        """httptools' feed, as uvicorn's ``data_received`` does it, plus our refusals."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as error:
            cause = error.__context__
            if isinstance(cause, HeadRefused):
                self._refuse(cause)
                return
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)

    # Parser callbacks -----------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.max_url_bytes:
            detail = f"The request's URL is longer than the {_kb(self.max_url_bytes)} limit."
            raise HeadRefused(414, detail)
        super().on_url(url)

    def on_headers_complete(self) -> None:
        self.reading_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # Whatever follows on this connection is the next request's head.
        self.reading_head = True
        self.head_bytes = self.body_bytes = self.framing_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle  # a pipelined request started just now is not the one answered
        if cycle is None or not cycle.response_complete or not cycle.more_body:
            return
        if self.transport.is_closing():
            return
        # Answered before its body was read (a 401 at the upload door, a route that takes
        # none): the rest of the body would be read and dropped for as long as it trickles in,
        # each byte putting off the keep-alive timeout, and no body timer runs where the app
        # reads nothing. The connection ends after a moment's linger instead.
        self.refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    # Refusing -------------------------------------------------------------------------------

    def _refuse(self, refused: HeadRefused) -> None:
        self.refused = True
        self._disarm_head_timer()
        client = self.client[0] if self.client else "unknown"
        logger.info("refused a request head from %s: %s", client, refused.detail)
        if self.cycle is not None and not self.cycle.response_complete:
            # An answer to the previous request is still being written: no room for ours.
            self.transport.close()
            return
        self.transport.write(refusal(refused.status, refused.detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or not self.reading_head:
            return
        if self.head_bytes == 0:  # nothing of a request arrived: close without an answer
            self.transport.close()
            return
        detail = f"The request's headers did not arrive within {self.head_timeout_s:g} s."
        self._refuse(HeadRefused(408, detail))
