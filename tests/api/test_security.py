"""Passwords and tokens, below the HTTP layer."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import jwt
import pytest

from imgclf.api.security import (
    InvalidTokenError,
    PasswordHasher,
    VerifiedTokens,
    create_access_token,
    decode_access_token,
    hash_password,
    verify_password,
)
from imgclf.settings import Settings
from tests.support import CHEAP_HASHING, DEFAULT_HASHING


def test_passwords_are_hashed_with_argon2_and_salted() -> None:
    hashing = DEFAULT_HASHING
    first, second = hash_password("correct horse", hashing), hash_password("correct horse", hashing)
    assert first.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert first != second
    assert verify_password("correct horse", first, hashing)
    assert not verify_password("Correct horse", first, hashing)


@pytest.mark.alone  # a comparison of times: another test process's load would skew it
def test_an_unknown_email_costs_as_much_as_a_wrong_password() -> None:
    hashing = DEFAULT_HASHING  # the production cost: what the time of a check is made of
    known = hash_password("correct horse", hashing)
    verify_password("warm-up", None, hashing)

    def best_of_three(stored: str | None) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            assert not verify_password("wrong", stored, hashing)
            times.append(time.perf_counter() - start)
        return min(times)

    assert best_of_three(None) > 0.5 * best_of_three(known)


def test_tokens_name_their_user_and_expire() -> None:
    settings = Settings(access_token_minutes=5)
    assert decode_access_token(create_access_token(42, settings), settings) == 42
    old = create_access_token(42, settings, now=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(InvalidTokenError):
        decode_access_token(old, settings)
    with pytest.raises(InvalidTokenError):
        decode_access_token(create_access_token(42, settings), Settings(secret_key="x" * 40))


def test_a_remembered_token_still_expires_on_time_and_only_valid_tokens_are_remembered() -> None:
    minutes = 5
    settings = Settings(access_token_minutes=minutes)
    tokens = VerifiedTokens(settings, size=2)
    # Expires 1.5-2.5 s from now (exp is a whole second): verified in full once, then remembered.
    soon = datetime.now(UTC) - timedelta(minutes=minutes) + timedelta(seconds=2.5)
    expiring = create_access_token(7, settings, now=soon)
    assert tokens.user_id(expiring) == 7
    assert tokens.user_id(expiring) == 7
    time.sleep(max(0.0, jwt_expiry(expiring) - time.time()) + 0.05)
    with pytest.raises(InvalidTokenError, match="expired"):
        tokens.user_id(expiring)

    forged = create_access_token(7, Settings(secret_key="x" * 40))
    tampered = create_access_token(8, settings)[:-2] + "AA"
    for bad in (forged, tampered, "not.a.token", ""):
        for _ in range(2):  # refused again: a refusal is never remembered as a pass
            with pytest.raises(InvalidTokenError):
                tokens.user_id(bad)

    # Only the most recent are kept; one pushed out is simply checked in full again.
    first, second, third = (create_access_token(n, settings) for n in (1, 2, 3))
    assert [tokens.user_id(t) for t in (first, second, third, first)] == [1, 2, 3, 1]


def jwt_expiry(token: str) -> float:
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


def test_the_hasher_runs_argon2_off_the_loop_a_few_at_a_time() -> None:
    async def main() -> None:
        hasher = PasswordHasher(CHEAP_HASHING, max_concurrent=2)
        hashes = []
        async with anyio.create_task_group() as group:
            for number in range(3):

                async def one(n: int = number) -> None:
                    hashes.append((n, await hasher.hash(f"password {n}")))

                group.start_soon(one)
        for number, stored in hashes:
            assert await hasher.verify_and_renew(f"password {number}", stored) == (True, None)
        assert await hasher.verify_and_renew("password 9", None) == (False, None)

    anyio.run(main)
