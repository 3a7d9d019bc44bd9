"""A lone request taken apart: the stages its answer's ``Server-Timing`` header names (see
imgclf.api.predictions.timing), as medians over requests sent one at a time on one keep-alive
connection by the standard library's client, with the client's own time beside them."""

from __future__ import annotations

import http.client
import statistics
import time
import urllib.parse
from collections import defaultdict

from wrkload import Upload

from imgclf.api.predictions.timing import parse_server_timing

# The stages in the order a request meets them; "outside" is what the HTTP server, the loopback
# and this client add to the app's own time.
ORDER = ["read", "check", "queue", "decode", "inference", "record", "app", "outside", "client"]


def lone_stages(url: str, upload: Upload, count: int = 200) -> dict[str, float]:
    """Median milliseconds of each stage over ``count`` uploads, one at a time."""
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
            stages["client"] = client_ms
            stages["outside"] = client_ms - stages["app"]
            for name, ms in stages.items():
                samples[name].append(ms)
    finally:
        connection.close()
    return {name: statistics.median(samples[name]) for name in ORDER if name in samples}
