"""HTTP spoken over a raw socket, for attacks that a client library would not send as written:
heads and bodies streamed until the server answers, and probes of whether it still serves
others meanwhile."""

from __future__ import annotations

import json
import select
import socket
import time

import httpx

CHUNK = b"a" * 65536


def read_answer(sock: socket.socket, timeout_s: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout)."""
    sock.settimeout(timeout_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def stream_head(port: int, start: bytes, filler_bytes: int) -> tuple[bytes, int]:
    """Send ``start`` and then up to ``filler_bytes`` more of an unfinished head, stopping as
    soon as the server answers; returns (the answer, bytes sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(start)
        sent = len(start)
        while sent < len(start) + filler_bytes:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(CHUNK)
            except OSError:
                break
            sent += len(CHUNK)
        return read_answer(sock), sent


def status_and_detail(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["detail"]


def probe_while(url: str, attack: object) -> list[tuple[int, float]]:
    """GET /health/live on fresh connections until ``attack`` (a future) is done, at least
    once: on a fast machine the server refuses the attack before a first probe could start."""
    answers = []
    while True:
        started = time.monotonic()
        try:
            status = httpx.get(f"{url}/health/live", timeout=10).status_code
        except httpx.HTTPError:
            status = 0
        answers.append((status, time.monotonic() - started))
        if attack.done():  # type: ignore[attr-defined]
            return answers


def stream_body(port: int, head: bytes, body: bytes) -> tuple[bytes, int]:
    """Send ``head`` and then ``body`` in 64 KB pieces, stopping as soon as the server answers;
    returns (the answer, body bytes sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sent = 0
        while sent < len(body):
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(body[sent : sent + len(CHUNK)])
            except OSError:
                break
            sent += len(CHUNK)
        return read_answer(sock), min(sent, len(body))


def trickle_body(sock: socket.socket, piece: bytes, every_s: float, for_s: float) -> bytes:
    """Send ``piece`` every ``every_s`` seconds until the server answers (or ``for_s``);
    returns the answer."""
    ends = time.monotonic() + for_s
    while time.monotonic() < ends:
        if select.select([sock], [], [], every_s)[0]:
            break
        try:
            sock.sendall(piece)
        except OSError:
            break
    return read_answer(sock)


def trickle_after_answer(port: int, head: bytes, limit_s: float = 10.0) -> tuple[bytes, float]:
    """Send ``head`` (which announces a body) and then a byte of its body every 0.2 s, reading
    whatever comes back, until the server closes the connection or ``limit_s`` passes;
    returns (the answer, seconds the connection stayed open after it, inf if never closed)."""
    answer, answered_at = b"", 0.0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            if select.select([sock], [], [], 0.2)[0]:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return answer, time.monotonic() - answered_at
                answer += chunk
                answered_at = answered_at or time.monotonic()
                continue
            try:
                sock.sendall(b"a")
            except OSError:
                return answer, time.monotonic() - answered_at
    return answer, float("inf")
