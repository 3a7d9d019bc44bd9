"""Both spellings of a path, with and without its trailing slash, answered where they arrive.

Starlette answers the other spelling with a redirect to a URL built from the request's Host
header, so the service would point a client wherever that client said it was; clients also
follow a 307 with the body again, or a 301/302 as a GET without it. Here ``/user`` is served
as ``/user/`` is, and ``/health/live/`` as ``/health/live``, with no redirect at all.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import BaseRoute, Match, Router
from starlette.types import Receive, Scope, Send


def _twin(path: str) -> str:
    return path.rstrip("/") if path.endswith("/") else path + "/"


class SlashTwinRoutes:
    """The router's fallback when no route matched: the path's twin, else the usual 404."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def _match(self, scope: Scope) -> tuple[BaseRoute, Scope] | None:
        partial: tuple[BaseRoute, Scope] | None = None
        for route in self.router.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return route, child_scope
            if match is Match.PARTIAL and partial is None:
                partial = (route, child_scope)  # the path, with another method: 405
        return partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "/")
        if scope["type"] == "http" and path.strip("/"):
            twin = {**scope, "path": _twin(path), "raw_path": _twin(path).encode()}
            found = self._match(twin)
            if found is not None:
                route, child_scope = found
                scope.update(twin, route=route, **child_scope)
                await route.handle(scope, receive, send)
                return
        await self.router.not_found(scope, receive, send)


def serve_slash_twins(app: FastAPI) -> None:
    app.router.redirect_slashes = False
    app.router.default = SlashTwinRoutes(app.router)
