"""Admission control: refuse new uploads at the door while this process is already full.

The queue refuses a job past ``max_pending`` too, but only after the upload has been read,
parsed and checked, and the caller authenticated: under overload that work is what makes a
refusal slow. Here a refusal costs a comparison and a small JSON answer.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from imgclf.api.middleware import UPLOAD_PATHS


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS:
            state = scope["app"].state
            queue = getattr(state, "queue", None)
            limit = state.settings.max_pending
            if queue is not None and queue.in_flight >= limit:
                metrics = getattr(state, "metrics", None)
                if metrics is not None:
                    metrics.reject("QueueFullError")
                response = JSONResponse(
                    {
                        "detail": f"The service is busy: {limit} images are already waiting; "
                        "retry shortly."
                    },
                    status_code=503,
                    headers={"Retry-After": "1"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
