"""A lone request taken apart: the stages its answer's ``Server-Timing`` header names (see
imgclf.api.predictions.timing), as medians over requests sent one at a time on one keep-alive
connection by the standard library's client, with the client's own time beside them.

Each upload is followed by one raw decode + classify of the same picture in this process, while
the service is idle: the pairs share the host's moment, so the overhead of a request over the
raw pipeline (the median of the pairs' differences) is not the host's drift between a raw loop
measured first and the requests measured later. On a shared machine the model's call took 6.6
to 9.5 ms from one round to the next."""

from __future__ import annotations

import http.client
import statistics
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from pipeline import MODEL_DIR
from wrkload import Upload

from imgclf.api.predictions.timing import parse_server_timing
from imgclf.model import ImageLimits, load_bundle
from imgclf.model.classifier import Classifier

# The stages in the order a request meets them; "outside" is what the HTTP server, the loopback
# and this client add to the app's own time. Then the raw pipeline's, and the pairs' difference.
ORDER = ["read", "check", "queue", "decode", "inference", "record", "app", "outside", "client"]
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


def lone_stages(url: str, upload: Upload, raw: RawCall, count: int = 200) -> dict[str, float]:
    """Median milliseconds of each stage over ``count`` uploads, one at a time, each followed
    by one ``raw`` call."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"Content-Type": upload.content_type, "Authorization": upload.authorization}
    samples: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(count):
            started = time.perf_counter()
            connection.request("POST", parts.path, body=upload.body, headers=headers)
            response = connection.getresponse()
            response.read()
            client_ms = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise RuntimeError(f"a lone upload got {response.status}")
            stages = parse_server_timing(response.headers["Server-Timing"])
            decode_ms, inference_ms = raw()
            stages.update(
                {
                    "client": client_ms,
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
        connection.close()
    return {name: statistics.median(samples[name]) for name in [*ORDER, *RAW] if name in samples}
