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
import ipaddress
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

# Which clients a budget counts: every one, only those that have not logged in to the account
# before (strangers), or only those that have (known).
ALWAYS, STRANGERS, KNOWN = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``limit`` attempts counted under ``key`` in any ``window_s`` seconds; ``what``
    they are, in the refusal's words; ``counts_successes``: a login that succeeds stays
    counted here; ``applies``: to which clients (``ALWAYS``, ``STRANGERS`` or ``KNOWN``)."""

    key: str
    limit: int
    window_s: float
    what: str
    counts_successes: bool = False
    applies: int = ALWAYS

    def counts(self, known: bool) -> bool:
        return self.applies == ALWAYS or self.applies == (KNOWN if known else STRANGERS)


@dataclass(frozen=True, slots=True)
class KnownClients:
    """The clients that have logged in to one account: its ``record``, this client's entry in
    it, kept ``keep_s`` seconds after its last login; at most ``most`` per account (the newest),
    so one account's logins from many addresses cannot grow it, nor push another's out."""

    record: str
    client: str
    keep_s: float
    most: int = 16


@dataclass(frozen=True, slots=True)
class Attempt:
    """One admitted attempt: its entry in each window it was counted in."""

    budgets: tuple[Budget, ...]
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    known: bool = False  # the client logged in to the account lately

    @property
    def failures(self) -> list[Budget]:
        """Its budgets that count failures only (a success, or no check, gives them back)."""
        return [budget for budget in self.budgets if not budget.counts_successes]


class AttemptsRefused(Exception):
    """A budget of ``what`` is spent; it has room again in ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int, what: str) -> None:
        super().__init__(retry_after_s, what)
        self.retry_after_s = retry_after_s
        self.what = what


class AttemptCounter(Protocol):
    """Counts attempts in windows, in process or shared."""

    async def admit(self, budgets: Sequence[Budget], known: KnownClients | None = None) -> Attempt:
        """Count one attempt in every budget that applies to the client (known to ``known``
        or not), or in none and raise ``AttemptsRefused``; one step, so that whether the
        client is known and the counts cannot change in between."""
        ...

    async def give_back(
        self, attempt: Attempt, budgets: Sequence[Budget], remember: KnownClients | None = None
    ) -> None:
        """Count the attempt no more in these of its budgets; and know its client from now on
        for ``remember``, if given."""
        ...

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
    and at most ``max_keys`` windows are kept (expired ones go first); as many accounts' known
    clients, each at most ``KnownClients.most``."""

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._known: dict[str, dict[str, float]] = {}  # record -> client -> until when
        self._lock = threading.RLock()  # admit holds it across knows and admit_now

    def __len__(self) -> int:
        return len(self._windows)

    async def admit(self, budgets: Sequence[Budget], known: KnownClients | None = None) -> Attempt:
        with self._lock:
            return self.admit_now(budgets, self.knows(known), secrets.token_hex(8), force=False)

    def knows(self, known: KnownClients | None) -> bool:
        """Whether ``known``'s client has logged in to its account lately."""
        if known is None:
            return False
        with self._lock:
            until = self._known.get(known.record, {}).get(known.client, -math.inf)
        return until > self._clock()

    def admit_now(
        self, budgets: Sequence[Budget], known: bool, token: str, *, force: bool
    ) -> Attempt:
        """``admit`` for a client known or not; ``force``: counted even where a budget is
        spent (Redis, which decides, admitted it)."""
        counted = tuple(budget for budget in budgets if budget.counts(known))
        attempt = Attempt(counted, token, known)
        if not counted:
            return attempt
        with self._lock:
            now = self._clock()
            wait, spent = 0.0, counted[0]
            for budget in counted:
                window = self._windows.get(budget.key)
                if window is None:
                    continue
                window.drop_expired(now)
                over = len(window.entries) - budget.limit
                # Room again when the entry `over` places from the oldest expires.
                if over >= 0 and window.entries[over][0] + budget.window_s - now > wait:
                    wait, spent = window.entries[over][0] + budget.window_s - now, budget
            if wait > 0 and not force:
                raise AttemptsRefused(seconds_to_wait(wait), spent.what)
            for budget in counted:
                window = self._windows.get(budget.key)
                if window is None:
                    if len(self._windows) >= self._max_keys:
                        self._evict(now)
                    window = self._windows[budget.key] = _Window(budget.window_s)
                window.entries.append((now, attempt.token))
            return attempt

    async def give_back(
        self, attempt: Attempt, budgets: Sequence[Budget], remember: KnownClients | None = None
    ) -> None:
        with self._lock:
            for budget in budgets:
                window = self._windows.get(budget.key)
                if window is not None:
                    kept = [entry for entry in window.entries if entry[1] != attempt.token]
                    window.entries = deque(kept)
            if remember is not None:
                self._remember_now(remember)

    def learn(self, known: KnownClients, for_s: float) -> None:
        """What Redis knows: ``known``'s client is known for ``for_s`` seconds more."""
        with self._lock:
            self._remember_now(known, for_s)

    def _remember_now(self, known: KnownClients, for_s: float | None = None) -> None:
        record = self._known.pop(known.record, None) or {}
        if len(self._known) >= self._max_keys:  # the account that logged in longest ago goes
            del self._known[next(iter(self._known))]
        record[known.client] = self._clock() + (known.keep_s if for_s is None else for_s)
        if len(record) > known.most:
            record = dict(sorted(record.items(), key=lambda item: item[1])[-known.most :])
        self._known[known.record] = record  # last: the newest login

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


def client_network(address: str) -> str:
    """The unit a budget counts clients in: an IPv4 address, or an IPv6 address's /64 (one
    host, or one home's network, holds a whole /64 and picks any address in it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # one client for whatever is not an address (010.0.0.1, a Unix socket)
        return "not an address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AuthThrottle:
    """Who may try a password, or sign up, now.

    Failed logins are counted per email, per (email, client) and per client (an IPv4 address or
    an IPv6 /64). Per email, two budgets of ``max_failures_per_email``: one for the clients
    that have not logged in to the account lately (``login_known_client_days``; strangers),
    one for the clients that have (its owner's). So strangers' failures, which refuse that
    email to every stranger for the rest of the window, never refuse its owner where the owner
    logs in, and one email gets at most twice ``max_failures_per_email`` password checks a
    window, however many addresses guess. Keys are an HMAC of the email and address under the
    secret key, so the counts (in Redis too) name neither.
    """

    def __init__(self, counter: AttemptCounter, settings: Settings) -> None:
        self.counter = counter
        self._settings = settings
        self._key_secret = settings.secret_key.get_secret_value().encode()

    def _key(self, kind: str, *values: str) -> str:
        text = json.dumps(values)  # unambiguous, whatever the values hold
        digest = hmac.new(self._key_secret, text.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{kind}:{digest}"

    def _known(self, email: str, client: str) -> KnownClients:
        keep_s = self._settings.login_known_client_days * 86_400
        return KnownClients(self._key("known", email), self._key("client", client), keep_s)

    async def login(self, email: str, address: str) -> Attempt:
        settings = self._settings
        window, most = settings.login_failure_window_s, settings.login_max_failures_per_email
        client = client_network(address)
        failed = "failed logins"
        budgets = [
            Budget(self._key("login-email", email, client), most, window, failed),
            Budget(
                self._key("login-address", client),
                settings.login_max_failures_per_address,
                window,
                failed,
            ),
            Budget(
                self._key("logins-email", email, client),
                settings.login_max_per_email,
                window,
                "logins",
                counts_successes=True,
            ),
            Budget(self._key("failed-strangers", email), most, window, failed, applies=STRANGERS),
            Budget(self._key("failed-known", email), most, window, failed, applies=KNOWN),
        ]
        return await self.counter.admit(budgets, self._known(email, client))

    async def sign_up(self, address: str) -> Attempt:
        settings = self._settings
        return await self.counter.admit(
            [
                Budget(
                    self._key("sign-up-address", client_network(address)),
                    settings.signup_max_per_address,
                    settings.signup_window_s,
                    "sign-ups from your address",
                )
            ]
        )

    async def give_back(self, attempt: Attempt) -> None:
        """The attempt did not count: no password was checked, nothing was created."""
        await self.counter.give_back(attempt, attempt.budgets)

    async def busy(self, attempt: Attempt) -> None:
        """No password was checked (the line was full): no failure, but still a login, so
        that a client cannot try again and again for free while it keeps the line full."""
        await self.counter.give_back(attempt, attempt.failures)

    async def succeeded(self, attempt: Attempt, email: str, address: str) -> None:
        """A login that succeeded: no failure, still a login; and from now on its client is
        one the account's owner uses."""
        known = self._known(email, client_network(address))
        await self.counter.give_back(attempt, attempt.failures, remember=known)

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
