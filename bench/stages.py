"""A lone request taken apart: the stages its answer's ``Server-Timing`` header names (see
imgclf.api.predictions.timing), as medians over requests sent one at a time on one keep-alive
connection by a bare socket client (``BareClient``), with the client's own CPU time beside them.

Each upload is followed by one raw decode + classify of the same picture in this process, while
the service is idle: the pairs share the host's moment, so the overhead of a request over the
raw pipeline (the median of the pairs' differences) is not the host's drift between a raw loop
measured first and the requests measured later. On a shared machine the model's call took 6.6
to 9.5 ms from one round to the next."""

from __future__ import annotations

import socket
import statistics
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from pipeline import MODEL_DIR
from wrkload import Upload

from imgclf.api.predictions.timing import parse_server_timing
from imgclf.model.bundle import load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.images import ImageLimits

# The stages in the order a request meets them; "outside" is what the HTTP server, the loopback
# and this client add to the app's own time. Then the raw pipeline's, and the pairs' difference.
ORDER = [
    "read",
    "check",
    "queue",
    "decode",
    "inference",
    "record",
    "app",
    "outside",
    "client",
    "client cpu",
]
RAW = ["raw decode", "raw inference", "raw", "over raw"]

RawCall = Callable[[], tuple[float, float]]


def raw_call(image: bytes) -> RawCall:
    """One decode + classify of ``image`` on every core, as the raw loop does: (decode ms,
    inference ms)."""
    classifier = Classifier(load_bundle(MODEL_DIR))
    limits = ImageLimits()
    for _ in range(10):
        classifier.classify_bytes([image], limits)

    def call() -> tuple[float, float]:
        started = time.perf_counter()
        tensor = classifier.preprocess(image, limits)
        decoded = time.perf_counter()
        classifier.classify(np.stack([tensor]))
        return (decoded - started) * 1000, (time.perf_counter() - decoded) * 1000

    return call


class BareClient:
    """One keep-alive connection that sends a prepared upload in one write and reads the answer
    by its Content-Length. Its own CPU time is measured with every request (tens of
    microseconds); Python's http.client, used before, added 0.3 ms to each (building the
    request, parsing the answer's headers with the email package), which is the client's cost,
    not the service's."""

    def __init__(self, url: str, upload: Upload) -> None:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: {upload.content_type}\r\nAuthorization: {upload.authorization}\r\n"
            f"Content-Length: {len(upload.body)}\r\n\r\n"
        )
        self.request = head.encode() + upload.body
        self.socket = socket.create_connection((host, port), timeout=30)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self) -> tuple[int, dict[str, str]]:
        """Send the upload; its answer's status and headers (names in lower case)."""
        self.socket.sendall(self.request)
        received = b""
        while (end := received.find(b"\r\n\r\n")) < 0:
            received += self._receive()
        status_line, *lines = received[:end].decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        left = int(headers["content-length"]) - (len(received) - end - 4)
        while left > 0:
            left -= len(self._receive())
        return int(status_line.split(" ", 2)[1]), headers

    def _receive(self) -> bytes:
        chunk = self.socket.recv(65536)
        if not chunk:
            raise ConnectionError("the service closed the connection")
        return chunk

    def close(self) -> None:
        self.socket.close()


def lone_stages(url: str, upload: Upload, raw: RawCall, count: int = 200) -> dict[str, float]:
    """Median milliseconds of each stage over ``count`` uploads, one at a time, each followed
    by one ``raw`` call."""
    client = BareClient(url, upload)
    samples: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(count):
            started, started_cpu = time.perf_counter(), time.thread_time()
            status, headers = client.post()
            client_ms = (time.perf_counter() - started) * 1000
            client_cpu_ms = (time.thread_time() - started_cpu) * 1000
            if status != 200:
                raise RuntimeError(f"a lone upload got {status}")
            stages = parse_server_timing(headers["server-timing"])
            decode_ms, inference_ms = raw()
            stages.update(
                {
                    "client": client_ms,
                    "client cpu": client_cpu_ms,
                    "outside": client_ms - stages["app"],
                    "raw decode": decode_ms,
                    "raw inference": inference_ms,
                    "raw": decode_ms + inference_ms,
                    "over raw": client_ms - decode_ms - inference_ms,
                }
            )
            for name, ms in stages.items():
                samples[name].append(ms)
    finally:
        client.close()
    return {name: statistics.median(samples[name]) for name in [*ORDER, *RAW] if name in samples}
