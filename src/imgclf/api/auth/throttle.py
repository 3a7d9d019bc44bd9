"""Failed-login throttling: per email and per client address, in a sliding window.

In process by default; with Redis configured (``IMGCLF_QUEUE_URL``) the counts are kept there, so
every API process and replica shares them (``imgclf.api.auth.shared_throttle``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from imgclf.settings import Settings


class FailedLoginThrottle(Protocol):
    """What the login route asks of a throttle, in process or shared."""

    async def retry_after(self, email: str, address: str) -> int | None: ...

    async def record_failure(self, email: str, address: str) -> None: ...

    async def close(self) -> None: ...


def build_login_throttle(settings: Settings) -> FailedLoginThrottle:
    """Shared through Redis when the service has one, else in this process."""
    if settings.queue_url:
        from imgclf.api.auth.shared_throttle import RedisLoginThrottle

        return RedisLoginThrottle(
            settings.queue_url,
            LoginThrottle.from_settings(settings),
            key_secret=settings.secret_key.get_secret_value().encode(),
        )
    return LoginThrottle.from_settings(settings)


class LoginThrottle:
    """Counts failed logins; refuses a key that reached its limit until its oldest failure ages out.

    Successes are not counted, and every refusal ends by itself after at most one window, so an
    attacker cannot lock an owner out for longer than that. Memory is bounded: each key keeps
    at most ``limit`` timestamps, and at most ``max_keys`` keys are tracked.
    """

    def __init__(
        self,
        *,
        max_per_email: int,
        max_per_address: int,
        window_s: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"email": max_per_email, "address": max_per_address}
        self.window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginThrottle:
        return cls(
            max_per_email=settings.login_max_failures_per_email,
            max_per_address=settings.login_max_failures_per_address,
            window_s=settings.login_failure_window_s,
        )

    async def close(self) -> None:
        """Nothing to release in process."""

    def _keys(self, email: str, address: str) -> list[tuple[str, str]]:
        return [("email", email), ("address", address)]

    async def retry_after(self, email: str, address: str) -> int | None:
        """Seconds until this email and address may try again; None if they may now."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(email, address):
                failures = self._failures.get(key)
                if failures is None:
                    continue
                self._drop_expired(failures, now)
                if len(failures) >= self.limits[key[0]]:
                    wait = max(wait, failures[0] + self.window_s - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    async def record_failure(self, email: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            for key in self._keys(email, address):
                failures = self._failures.get(key)
                if failures is None:
                    if len(self._failures) >= self._max_keys:
                        self._evict(now)
                    failures = self._failures[key] = deque(maxlen=self.limits[key[0]])
                failures.append(now)

    def _drop_expired(self, failures: deque[float], now: float) -> None:
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()

    def _evict(self, now: float) -> None:
        """Forget expired keys; if that is not enough, the oldest half (inserted first)."""
        for key in [k for k, f in self._failures.items() if not f or f[-1] <= now - self.window_s]:
            del self._failures[key]
        if len(self._failures) >= self._max_keys:
            for key in list(self._failures)[: len(self._failures) // 2 + 1]:
                del self._failures[key]
