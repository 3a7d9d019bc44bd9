"""Where an upload's time went, stage by stage, in its answer's ``Server-Timing`` header.

The W3C Server Timing header: browsers' developer tools draw it beside the request, and
``curl -i`` shows it. With ``IMGCLF_SERVER_TIMING=true`` (off by default: the time taken to
store an upload says whether anyone had sent that picture before), ``POST /model/predict``
names these stages, in milliseconds:

- ``read``: from the request's arrival in the app to the route (the middleware, the token
  checked);
- ``check``: the body read and its multipart form parsed, the upload checked (size, extension,
  the picture's header and decoding cost) and named by its MD5;
- ``queue``: waiting for a lane of a model worker to take the job;
- ``decode``: the worker decoding the picture, and the hand-offs to it and back;
- ``inference``: the model's call for the batch the job was in;
- ``cache``: instead of the three above, an answer found in the prediction cache;
- ``record``: the prediction stored and its row written;
- ``app``: all of these, from arrival to the answer (what the HTTP server itself adds to a
  client's time is the rest).
"""

from __future__ import annotations

import time

from starlette.types import Scope

from imgclf.api.middleware import RECEIVED_AT
from imgclf.api.predictions.service import Answer


def server_timing(
    scope: Scope, routed: float, checked: float, answer: Answer, recorded_ms: float
) -> str:
    """The header's value for an upload routed and checked at those ``perf_counter`` times."""
    received: float = scope[RECEIVED_AT]
    if answer.cached:
        model_stages = [("cache", answer.latency_ms)]
    else:
        queued = answer.queue_ms
        decoding = max(0.0, answer.latency_ms - queued - answer.inference_ms)
        model_stages = [
            ("queue", queued),
            ("decode", decoding),
            ("inference", answer.inference_ms),
        ]
    stages = [
        ("read", (routed - received) * 1000),
        ("check", (checked - routed) * 1000),
        *model_stages,
        ("record", recorded_ms),
        ("app", (time.perf_counter() - received) * 1000),
    ]
    return ", ".join(f"{name};dur={max(0.0, ms):.2f}" for name, ms in stages)


def parse_server_timing(header: str) -> dict[str, float]:
    """The stages of a header ``server_timing`` wrote, in order: name -> milliseconds."""
    stages = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        stages[name] = float(duration)
    return stages
