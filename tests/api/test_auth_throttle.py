"""Failed-login throttling: per email, per client address, successes free, windows that end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from imgclf.api.app import create_app
from imgclf.api.auth.throttle import LoginThrottle
from imgclf.localservers import free_port
from imgclf.settings import Settings

from .conftest import PASSWORD, Caller


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Throttling lives in the process, not the database: one database is enough here."""
    return f"sqlite:///{tmp_path / 'throttle.db'}"


def attempt(client: TestClient, email: str, password: str) -> httpx.Response:
    return client.post("/login", data={"username": email, "password": password})


def test_five_failures_lock_that_email_for_the_rest_of_the_window(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    for _ in range(5):
        assert attempt(client, alice.email, "wrong password").status_code == 401
    for password in ("wrong password", PASSWORD):  # even the right one waits for the window
        refused = attempt(client, alice.email, password)
        assert refused.status_code == 429
        retry_after = int(refused.headers["Retry-After"])
        assert 15 * 60 - 60 < retry_after <= 15 * 60
        assert refused.json() == {
            "detail": f"Too many failed logins; try again in {retry_after} seconds"
        }
    assert attempt(client, bob.email, PASSWORD).status_code == 200  # other emails still may


def test_successful_logins_do_not_count(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    for _ in range(4):
        assert attempt(client, alice.email, "wrong password").status_code == 401
    assert attempt(client, alice.email, PASSWORD).status_code == 200
    assert attempt(client, alice.email, "wrong password").status_code == 401
    assert attempt(client, alice.email, PASSWORD).status_code == 429


def test_one_address_has_a_budget_across_all_emails(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, login_max_failures_per_address=3))
    with TestClient(app) as client:
        for number in range(3):
            assert attempt(client, f"guess{number}@example.com", "password").status_code == 401
        refused = attempt(client, "admin@example.com", "admin")
        assert refused.status_code == 429
        assert "Retry-After" in refused.headers


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_ends_by_itself() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_per_email=2, max_per_address=10, window_s=60, clock=clock)

    def retry_after(email: str) -> int | None:
        return asyncio.run(throttle.retry_after(email, "10.0.0.1"))

    asyncio.run(throttle.record_failure("a@example.com", "10.0.0.1"))
    clock.now += 30
    asyncio.run(throttle.record_failure("a@example.com", "10.0.0.1"))
    assert retry_after("a@example.com") == 30
    assert retry_after("b@example.com") is None
    clock.now += 30  # the first failure ages out; one more try is allowed
    assert retry_after("a@example.com") is None
    clock.now += 30
    assert retry_after("a@example.com") is None


def test_memory_stays_bounded() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(
        max_per_email=3, max_per_address=3, window_s=60, max_keys=100, clock=clock
    )
    for number in range(1000):
        for _ in range(5):
            asyncio.run(
                throttle.record_failure(
                    f"user{number}@example.com", f"10.0.{number // 250}.{number}"
                )
            )
        clock.now += 0.01
    assert len(throttle._failures) <= 100
    assert all(len(failures) <= 3 for failures in throttle._failures.values())


# Shared through Redis: every API process counts together ---------------------------------------


def test_api_processes_sharing_redis_share_one_budget(
    database_url: str, redis_url: str, make_user: Callable[..., Caller]
) -> None:
    """Two apps (as two API processes or replicas) on one database and one Redis."""
    alice = make_user()
    settings = Settings(database_url=database_url, queue_url=redis_url)
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        for client in (first, second, first, second, first):
            assert attempt(client, alice.email, "wrong password").status_code == 401
        for client in (second, first):
            refused = attempt(client, alice.email, PASSWORD)
            assert refused.status_code == 429
            assert 15 * 60 - 60 < int(refused.headers["Retry-After"]) <= 15 * 60
        keys = redis.Redis.from_url(redis_url).keys("imgclf:login-failures:*")
    assert len(keys) == 2  # one per email, one per address
    assert not any(alice.email.encode() in key or b"testclient" in key for key in keys)


def test_without_redis_the_throttle_still_counts_in_process(
    database_url: str, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with TestClient(create_app(Settings(database_url=database_url, queue_url=nowhere))) as client:
        for _ in range(5):
            assert attempt(client, alice.email, "wrong password").status_code == 401
        assert attempt(client, alice.email, PASSWORD).status_code == 429
