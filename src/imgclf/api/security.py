"""Password hashing (Argon2 via pwdlib) and access tokens (PyJWT, HS256)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cache

import anyio
import jwt
from cachetools import LRUCache, TTLCache
from fastapi import HTTPException
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from imgclf.settings import Settings

ALGORITHM = "HS256"
# The longest token VerifiedTokens keeps: a few times this server's own (about 150 characters),
# so that odd spellings of one token that a JWT library might accept cannot fill it with
# headers' worth of bytes each.
MAX_REMEMBERED_TOKEN = 512
MAX_USER_ID = 2**31 - 1  # the users.id column is a 32-bit integer


class InvalidTokenError(Exception):
    """The token is missing a claim, expired, tampered with or signed with another key."""


@cache
def argon2(time_cost: int, memory_kib: int) -> PasswordHash:
    """Argon2id at this cost; one instance per cost, so the dummy hash below is made once."""
    return PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib),))


def password_hashing(settings: Settings) -> PasswordHash:
    """Argon2id at the cost ``settings`` give. A stored hash is verified at the cost written in
    it, whatever these settings say now."""
    return argon2(settings.password_hash_time_cost, settings.password_hash_memory_kib)


def hash_password(password: str, hashing: PasswordHash) -> str:
    return hashing.hash(password)


@cache
def _dummy_hash(hashing: PasswordHash) -> str:
    """One per cost: ``argon2`` makes one ``PasswordHash`` per cost, which this is keyed on."""
    return hashing.hash("imgclf-dummy-password-that-nobody-has")


def verify_password(password: str, password_hash: str | None, hashing: PasswordHash) -> bool:
    """Check a password; with no hash (unknown email) spend the same time and say no.

    Verifying against a dummy hash made at the configured cost makes an unknown email take as
    long as a wrong password for an account whose hash was made at that cost, so response
    times do not tell which emails have accounts. (An account whose hash was made at an older
    cost takes that cost's time until its next login renews it: see SECURITY.md.)
    """
    if password_hash is None:
        hashing.verify(password, _dummy_hash(hashing))
        return False
    return hashing.verify(password, password_hash)


def verify_and_renew(
    password: str, password_hash: str | None, hashing: PasswordHash
) -> tuple[bool, str | None]:
    """``verify_password``; and when the password is right but its hash was made at another
    cost than ``hashing``'s (the settings changed since), a new hash at today's cost to store
    in its place, else None."""
    if password_hash is None:
        return verify_password(password, None, hashing), None
    return hashing.verify_and_update(password, password_hash)


class PasswordChecksBusy(HTTPException):
    """Too many password checks at once: refused at once, never queued without end."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code, detail=detail, headers={"Retry-After": "1"})


class PasswordHasher:
    """Argon2 off the event loop, a few at a time, with a bounded line.

    Each hash takes about 64 MiB and a core for a fraction of a second: more at once than
    there are cores only queue for the CPU and multiply the memory, and they would take every
    worker thread that database work needs. Beyond ``max_waiting`` checks waiting for a core a
    check is refused (503), so a burst cannot make every login behind it wait seconds; one
    client address may run ``max_per_client`` at once (429 beyond), so a burst from one address
    holds only that many. The last ``reserved_for_known`` places are kept for the clients that
    logged in to their account lately, one each: strangers from a handful of addresses filled
    the whole line with made-up emails, and every owner's login was 503 for as long as they
    kept it full. Made in the app's lifespan (it belongs to a loop).
    """

    def __init__(
        self,
        hashing: PasswordHash,
        max_concurrent: int | None = None,
        *,
        max_waiting: int = 16,
        max_per_client: int = 4,
        reserved_for_known: int = 4,
    ) -> None:
        self._hashing = hashing
        self._limiter = anyio.CapacityLimiter(max_concurrent or os.cpu_count() or 2)
        self._max_admitted = int(self._limiter.total_tokens) + max_waiting
        self._max_for_strangers = self._max_admitted - min(reserved_for_known, max_waiting)
        self._max_per_client = max_per_client
        self._admitted = 0
        self._per_client: dict[str, int] = {}

    @contextmanager
    def _admission(self, client: str | None, known: bool) -> Iterator[None]:
        """Counted on the event loop (one thread), so no lock is needed."""
        if client is not None and self._per_client.get(client, 0) >= self._max_per_client:
            raise PasswordChecksBusy(
                429, "Too many password checks at once from your address; try again in 1 second"
            )
        # A kept place goes to a known client holding none: with accounts of their own,
        # strangers from five addresses were known, and kept every place full.
        owner = known and (client is None or client not in self._per_client)
        if self._admitted >= (self._max_admitted if owner else self._max_for_strangers):
            raise PasswordChecksBusy(
                503, "The server is busy checking other passwords; try again in 1 second"
            )
        self._admitted += 1
        if client is not None:
            self._per_client[client] = self._per_client.get(client, 0) + 1
        try:
            yield
        finally:
            self._admitted -= 1
            if client is not None:
                self._per_client[client] -= 1
                if not self._per_client[client]:
                    del self._per_client[client]

    async def hash(self, password: str, *, client: str | None = None) -> str:
        with self._admission(client, known=False):
            return await anyio.to_thread.run_sync(
                hash_password, password, self._hashing, limiter=self._limiter
            )

    async def verify_and_renew(
        self,
        password: str,
        password_hash: str | None,
        *,
        client: str | None = None,
        known: bool = False,
    ) -> tuple[bool, str | None]:
        """``verify_and_renew`` off the loop. ``client`` (an address) limits how many checks
        it runs at once; None: no limit. ``known``: the client logged in to this account
        lately, and may take the places kept for such clients."""
        with self._admission(client, known):
            return await anyio.to_thread.run_sync(
                verify_and_renew, password, password_hash, self._hashing, limiter=self._limiter
            )


def create_access_token(user_id: int, settings: Settings, *, now: datetime | None = None) -> str:
    issued = now or datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "iat": issued,
        "exp": issued + timedelta(minutes=settings.access_token_minutes),
    }
    return jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm=ALGORITHM)


def decode_access_token(token: str, settings: Settings) -> int:
    """The user id a valid token names; anything else raises InvalidTokenError."""
    user_id, _expires = _verified_claims(token, settings)
    return user_id


def _verified_claims(token: str, settings: Settings) -> tuple[int, float]:
    """The user id a valid token names and when it expires (epoch seconds)."""
    try:
        claims = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[ALGORITHM],  # pinned: never trust the token's own `alg` header
            options={"require": ["exp", "iat", "sub"]},
        )
        user_id, expires = int(claims["sub"]), float(claims["exp"])
    except (jwt.InvalidTokenError, ValueError, TypeError) as error:
        raise InvalidTokenError(str(error)) from None
    if not 1 <= user_id <= MAX_USER_ID:
        raise InvalidTokenError("the subject is not a user id")
    return user_id, expires


class VerifiedTokens:
    """``decode_access_token`` for a process that sees the same tokens again and again: each
    token is verified in full (signature, claims) the first time, then only its expiry is
    checked, for as long as it stays among the ``size`` most recently used.

    A client sends the same token with every request, and the upload path reads it twice (at
    admission and in the route): two full checks were 10-15% of the API thread's CPU time
    per upload at saturation. Only tokens that passed the full check are kept, so a
    stranger's tokens cost the full check every time and never fill the cache; a token
    stays valid exactly until its ``exp``, as before.
    """

    def __init__(self, settings: Settings, size: int = 4096) -> None:
        self._settings = settings
        self._known: LRUCache[str, tuple[int, float]] = LRUCache(maxsize=size)
        # Accounts deleted through this process, for as long as a token of theirs can live:
        # the upload path reads no account before the model, so their tokens would still
        # have the model run until the answer's record found the account gone.
        self._deleted: TTLCache[int, bool] = TTLCache(
            maxsize=100_000, ttl=settings.access_token_minutes * 60
        )
        self._lock = threading.Lock()

    def forget_user(self, user_id: int) -> None:
        """Refuse the tokens of a deleted account from now on (in this process)."""
        with self._lock:
            self._deleted[user_id] = True
            for token in [token for token, (owner, _) in self._known.items() if owner == user_id]:
                del self._known[token]

    def user_id(self, token: str) -> int:
        """The user id a valid token names; anything else raises InvalidTokenError."""
        if len(token) > MAX_REMEMBERED_TOKEN:  # ours are ~150 characters: checked, not kept
            return decode_access_token(token, self._settings)
        with self._lock:
            known = self._known.get(token)
        if known is not None:
            user_id, expires = known
            if time.time() < expires:  # PyJWT's own test: expired once exp <= now
                return user_id
            raise InvalidTokenError("Signature has expired")
        user_id, expires = _verified_claims(token, self._settings)
        with self._lock:
            if user_id in self._deleted:
                raise InvalidTokenError("The account was deleted")
            self._known[token] = (user_id, expires)
        return user_id
