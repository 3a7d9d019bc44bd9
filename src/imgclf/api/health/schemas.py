"""What the operations routes return."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Index(BaseModel):
    service: str = "imgclf"
    version: str
    status: Literal["ok"] = "ok"
    # Where a person starts: the interactive guide to every route, and the machine-readable one.
    docs: str = "/docs"
    openapi: str = "/openapi.json"


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str | int]
