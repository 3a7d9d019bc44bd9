"""What the app holds while it runs: built by the lifespan, read by dependencies and middleware."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.applications import Starlette

# Types only: the modules of these parts import this one to find the state.
if TYPE_CHECKING:
    from imgclf.api.auth.throttle import AuthThrottle
    from imgclf.api.metrics import ServiceMetrics
    from imgclf.api.predictions.admission import PendingBytes, WaitingPerUser
    from imgclf.api.predictions.cache import PredictionCache
    from imgclf.api.predictions.quota import StorageQuota
    from imgclf.api.predictions.recorder import PredictionRecorder
    from imgclf.api.predictions.retention import HistoryRetention
    from imgclf.api.security import PasswordHasher, VerifiedTokens
    from imgclf.api.shadow.runner import ShadowRunner
    from imgclf.db.engine import Database
    from imgclf.queue.base import JobQueue
    from imgclf.settings import Settings


@dataclass(slots=True)
class AppState:
    settings: Settings
    database: Database
    queue: JobQueue | None
    cache: PredictionCache | None
    password_hasher: PasswordHasher
    auth_throttle: AuthThrottle
    storage_quota: StorageQuota
    recorder: PredictionRecorder
    retention: HistoryRetention
    pending_bytes: PendingBytes
    waiting: WaitingPerUser
    metrics: ServiceMetrics
    tokens: VerifiedTokens
    # Shadow copies to candidate versions, with a queue to copy them to.
    shadow: ShadowRunner | None = None
    # Async jobs waiting for their answers: shutdown gives them a moment to be recorded.
    background_jobs: set[asyncio.Task[None]] = field(default_factory=set)


def app_state(app: Starlette) -> AppState:
    """The running app's state (set by its lifespan)."""
    state: AppState = app.state.running
    return state
