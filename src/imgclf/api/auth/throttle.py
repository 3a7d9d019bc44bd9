"""Budgets for logins and sign-ups: sliding windows that count an attempt before its work.

An attempt is counted in the same step that checks its budget, so attempts that arrive together
cannot all pass a budget that has room for a few: a burst of guesses for one email gets as many
password checks as the budget allows, and 429 for the rest. A login that succeeds gives its
place back in the failure budgets, not in the budget of all logins: someone who knows their
own password could otherwise keep the cores busy with Argon2 (a login costs 0.15 s of a core;
4 connections of one account's logins made another client's login 4-12 times slower). Refused
attempts are not counted, so every refusal ends when its window does.

In process by default; with Redis configured (``IMGCLF_QUEUE_URL``) the counts live there, so
every API process and replica shares them (``imgclf.api.auth.shared_throttle``).

Hand-written rather than the ``limits`` package: a login must be counted in all its windows at
once or in none, and a success must hand that one attempt back to some of them. ``limits`` hits
one window at a time and has no refund.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from imgclf.settings import Settings


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``limit`` attempts counted under ``key`` in any ``window_s`` seconds; ``what``
    they are, in the refusal's words; ``counts_successes``: a login that succeeds stays
    counted here."""

    key: str
    limit: int
    window_s: float
    what: str
    counts_successes: bool = False


@dataclass(frozen=True, slots=True)
class Attempt:
    """One admitted attempt: its entry in each of its budgets' windows."""

    budgets: tuple[Budget, ...]
    token: str = field(default_factory=lambda: secrets.token_hex(8))


class AttemptsRefused(Exception):
    """A budget of ``what`` is spent; it has room again in ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int, what: str) -> None:
        super().__init__(retry_after_s, what)
        self.retry_after_s = retry_after_s
        self.what = what


class AttemptCounter(Protocol):
    """Counts attempts in windows, in process or shared."""

    async def admit(self, budgets: Sequence[Budget]) -> Attempt:
        """Count one attempt in every budget, or in none and raise ``AttemptsRefused``."""
        ...

    async def give_back(self, attempt: Attempt, budgets: Sequence[Budget]) -> None:
        """Count the attempt no more in these of its budgets."""
        ...

    async def remember(self, key: str, ttl_s: float) -> None:
        """Keep ``key`` for ``ttl_s`` seconds (again from now if it is kept already)."""
        ...

    async def remembers(self, key: str) -> bool: ...

    async def close(self) -> None: ...


def seconds_to_wait(wait_s: float) -> int:
    return max(1, math.ceil(wait_s))


class _Window:
    __slots__ = ("entries", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.entries: deque[tuple[float, str]] = deque()  # (when, token), oldest first

    def drop_expired(self, now: float) -> None:
        while self.entries and self.entries[0][0] <= now - self.window_s:
            self.entries.popleft()


class WindowCounter:
    """Attempts counted in this process. Memory is bounded: a window holds at most its limit,
    and at most ``max_keys`` windows are kept (expired ones go first); as many remembered keys,
    the oldest forgotten first."""

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._remembered: dict[str, float] = {}  # key -> until when, oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._windows)

    async def admit(self, budgets: Sequence[Budget]) -> Attempt:
        attempt = Attempt(tuple(budgets))
        now = self._clock()
        with self._lock:
            wait, spent = 0.0, budgets[0]
            for budget in budgets:
                window = self._windows.get(budget.key)
                if window is None:
                    continue
                window.drop_expired(now)
                over = len(window.entries) - budget.limit
                # Room again when the entry `over` places from the oldest expires.
                if over >= 0 and window.entries[over][0] + budget.window_s - now > wait:
                    wait, spent = window.entries[over][0] + budget.window_s - now, budget
            if wait > 0:
                raise AttemptsRefused(seconds_to_wait(wait), spent.what)
            for budget in budgets:
                window = self._windows.get(budget.key)
                if window is None:
                    if len(self._windows) >= self._max_keys:
                        self._evict(now)
                    window = self._windows[budget.key] = _Window(budget.window_s)
                window.entries.append((now, attempt.token))
        return attempt

    async def give_back(self, attempt: Attempt, budgets: Sequence[Budget]) -> None:
        with self._lock:
            for budget in budgets:
                window = self._windows.get(budget.key)
                if window is not None:
                    kept = [entry for entry in window.entries if entry[1] != attempt.token]
                    window.entries = deque(kept)

    async def remember(self, key: str, ttl_s: float) -> None:
        with self._lock:
            self._remembered.pop(key, None)
            if len(self._remembered) >= self._max_keys:
                del self._remembered[next(iter(self._remembered))]
            self._remembered[key] = self._clock() + ttl_s

    async def remembers(self, key: str) -> bool:
        with self._lock:
            return self._remembered.get(key, -math.inf) > self._clock()

    async def close(self) -> None:
        """Nothing to release in process."""

    def _evict(self, now: float) -> None:
        """Forget expired windows; if that is not enough, the oldest half (inserted first)."""
        for key, window in list(self._windows.items()):
            window.drop_expired(now)
            if not window.entries:
                del self._windows[key]
        if len(self._windows) >= self._max_keys:
            for key in list(self._windows)[: len(self._windows) // 2 + 1]:
                del self._windows[key]


def build_attempt_counter(settings: Settings) -> AttemptCounter:
    """Shared through Redis when the service has one, else in this process."""
    if settings.queue_url:
        from imgclf.api.auth.shared_throttle import RedisWindowCounter

        return RedisWindowCounter(settings.queue_url, WindowCounter())
    return WindowCounter()


class AuthThrottle:
    """Who may try a password, or sign up, now.

    Failed logins are counted per email (``max_failures_per_email`` in a window, from every
    client together), per (email, client address) and per client address. A client address
    that has logged in to an account before (within ``login_known_client_days``) is counted
    only per (email, address) and per address for it: so a guesser spread over many addresses
    gets ``max_failures_per_email`` tries in all, and strangers' failures, which refuse that
    email to every other stranger for the rest of the window, never refuse its owner where the
    owner has logged in before. Keys are an HMAC of the email and address under the secret
    key, so the counts (in Redis too) name neither.
    """

    def __init__(self, counter: AttemptCounter, settings: Settings) -> None:
        self.counter = counter
        self._settings = settings
        self._key_secret = settings.secret_key.get_secret_value().encode()

    def _key(self, kind: str, *values: str) -> str:
        text = json.dumps(values)  # unambiguous, whatever the values hold
        digest = hmac.new(self._key_secret, text.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{kind}:{digest}"

    async def login(self, email: str, address: str) -> Attempt:
        settings = self._settings
        window = settings.login_failure_window_s
        budgets = [
            Budget(
                self._key("login-email", email, address),
                settings.login_max_failures_per_email,
                window,
                "failed logins",
            ),
            Budget(
                self._key("login-address", address),
                settings.login_max_failures_per_address,
                window,
                "failed logins",
            ),
            Budget(
                self._key("logins-email", email, address),
                settings.login_max_per_email,
                window,
                "logins",
                counts_successes=True,
            ),
        ]
        if not await self.counter.remembers(self._key("known-client", email, address)):
            budgets.append(
                Budget(
                    self._key("login-email-strangers", email),
                    settings.login_max_failures_per_email,
                    window,
                    "failed logins",
                )
            )
        return await self.counter.admit(budgets)

    async def sign_up(self, address: str) -> Attempt:
        settings = self._settings
        return await self.counter.admit(
            [
                Budget(
                    self._key("sign-up-address", address),
                    settings.signup_max_per_address,
                    settings.signup_window_s,
                    "sign-ups from your address",
                )
            ]
        )

    async def give_back(self, attempt: Attempt) -> None:
        """The attempt did not count: no password was checked, nothing was created."""
        await self.counter.give_back(attempt, attempt.budgets)

    async def succeeded(self, attempt: Attempt, email: str, address: str) -> None:
        """A login that succeeded: no failure, still a login; and from now on its address is
        one the account's owner uses."""
        failures = [budget for budget in attempt.budgets if not budget.counts_successes]
        await self.counter.give_back(attempt, failures)
        known_for_s = self._settings.login_known_client_days * 86_400
        await self.counter.remember(self._key("known-client", email, address), known_for_s)

    async def close(self) -> None:
        await self.counter.close()


def build_auth_throttle(settings: Settings) -> AuthThrottle:
    return AuthThrottle(build_attempt_counter(settings), settings)


def in_words(seconds: int) -> str:
    """``Retry-After`` for people: "40 seconds", "15 minutes" (never "898 seconds")."""
    if seconds < 60:
        return f"{seconds} second" + ("" if seconds == 1 else "s")
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute" + ("" if minutes == 1 else "s")
