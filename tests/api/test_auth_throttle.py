"""Login throttling: failures per email (from strangers together), per email and client and per
client address, every login per email and client, windows that end, the addresses an owner
logged in from; sign-ups budgeted per address."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from imgclf.api.app import create_app
from imgclf.api.auth.shared_throttle import RedisWindowCounter
from imgclf.api.auth.throttle import (
    AttemptCounter,
    AttemptsRefused,
    AuthThrottle,
    Budget,
    WindowCounter,
    client_network,
    in_words,
)
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
        assert refused.json() == {"detail": "Too many failed logins; try again in 15 minutes"}
    assert attempt(client, bob.email, PASSWORD).status_code == 200  # other emails still may


def test_successful_logins_do_not_count_as_failures(
    client: TestClient, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    for _ in range(4):
        assert attempt(client, alice.email, "wrong password").status_code == 401
    assert attempt(client, alice.email, PASSWORD).status_code == 200
    assert attempt(client, alice.email, "wrong password").status_code == 401
    assert attempt(client, alice.email, PASSWORD).status_code == 429


def test_successful_logins_have_a_budget_of_their_own(
    database_url: str, make_user: Callable[..., Caller]
) -> None:
    """Each login is an Argon2 check (0.15 s of a core): one account's own logins, repeated
    from 4 connections, made another client's login 4-12 times slower."""
    alice, bob = make_user(), make_user()
    settings = Settings(database_url=database_url, login_max_per_email=3)
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            assert attempt(client, alice.email, PASSWORD).status_code == 200
        refused = attempt(client, alice.email, PASSWORD)
        assert refused.status_code == 429
        assert 15 * 60 - 60 < int(refused.headers["Retry-After"]) <= 15 * 60
        assert refused.json() == {"detail": "Too many logins; try again in 15 minutes"}
        assert attempt(client, bob.email, PASSWORD).status_code == 200


def test_an_attempt_refused_or_given_back_leaves_the_budget_of_all_logins() -> None:
    counter = WindowCounter(clock=FakeClock())
    failures = Budget("failures", 1, 60, "failed logins")
    logins = Budget("logins", 2, 60, "logins", counts_successes=True)
    first = asyncio.run(counter.admit([failures, logins]))
    with pytest.raises(AttemptsRefused) as refused:
        asyncio.run(counter.admit([failures, logins]))  # not counted in either
    assert refused.value.what == "failed logins"
    asyncio.run(counter.give_back(first, [failures]))  # it succeeded: still a login
    asyncio.run(counter.admit([failures, logins]))
    with pytest.raises(AttemptsRefused) as refused:
        asyncio.run(counter.admit([Budget("other", 1, 60, "failed logins"), logins]))
    assert refused.value.what == "logins"


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
    counter = WindowCounter(clock=clock)

    def admit(key: str = "a") -> int | None:
        """None if admitted, else the seconds to wait."""
        try:
            asyncio.run(counter.admit([Budget(key, 2, 60, "tries")]))
        except AttemptsRefused as refused:
            return refused.retry_after_s
        return None

    assert admit() is None
    clock.now += 30
    assert admit() is None
    assert admit() == 30
    assert admit("b") is None
    clock.now += 30  # the first attempt ages out; one more is admitted
    assert admit() is None
    assert admit() == 30


def test_an_attempt_counts_in_all_its_windows_or_in_none() -> None:
    counter = WindowCounter(clock=FakeClock())
    email, address = Budget("email", 1, 60, "tries"), Budget("address", 3, 60, "tries")
    first = asyncio.run(counter.admit([email, address]))
    with pytest.raises(AttemptsRefused):
        asyncio.run(counter.admit([email, address]))  # refused: not counted for the address
    for other in ("second", "third"):
        asyncio.run(counter.admit([Budget(other, 1, 60, "tries"), address]))
    with pytest.raises(AttemptsRefused):
        asyncio.run(counter.admit([Budget("fourth", 1, 60, "tries"), address]))
    asyncio.run(counter.give_back(first, first.budgets))  # handed back in both
    asyncio.run(counter.admit([email, address]))


def test_memory_stays_bounded() -> None:
    clock = FakeClock()
    counter = WindowCounter(max_keys=100, clock=clock)
    for number in range(1000):
        for _ in range(5):
            budgets = [
                Budget(f"user{number}", 3, 60, "tries"),
                Budget(f"10.0.{number // 250}", 3, 60, "tries"),
            ]
            with contextlib.suppress(AttemptsRefused):
                asyncio.run(counter.admit(budgets))
        clock.now += 0.01
    assert len(counter) <= 100


# Per email, from every address together; but not for the addresses its owner uses ------------


def failed_login(throttle: AuthThrottle, email: str, address: str) -> int | None:
    """A wrong password tried: None once counted, else the seconds it must wait."""
    try:
        asyncio.run(throttle.login(email, address))
    except AttemptsRefused as refused:
        return refused.retry_after_s
    return None


def logged_in(throttle: AuthThrottle, email: str, address: str) -> bool:
    """The right password tried: whether the throttle let it be checked."""
    try:
        attempt = asyncio.run(throttle.login(email, address))
    except AttemptsRefused:
        return False
    asyncio.run(throttle.succeeded(attempt, email, address))
    return True


def make_throttle(counter: AttemptCounter) -> AuthThrottle:
    return AuthThrottle(counter, Settings(database_url="sqlite://"))


def test_failures_from_many_addresses_refuse_that_email_to_every_stranger() -> None:
    """A guesser spread over many addresses (a botnet) had 5 tries for one email from each."""
    throttle = make_throttle(WindowCounter(clock=FakeClock()))
    for number in range(5):
        assert failed_login(throttle, "ann@example.com", f"203.0.113.{number}") is None
    assert failed_login(throttle, "ann@example.com", "203.0.113.99") == 15 * 60
    assert not logged_in(throttle, "ann@example.com", "198.51.100.7")  # a stranger too
    assert logged_in(throttle, "bob@example.com", "203.0.113.99")  # other emails still may


def test_the_owners_own_address_is_spared_the_strangers_failures() -> None:
    clock = FakeClock()
    throttle = make_throttle(WindowCounter(clock=clock))
    owner = "198.51.100.7"
    assert logged_in(throttle, "ann@example.com", owner)
    for number in range(5):
        assert failed_login(throttle, "ann@example.com", f"203.0.113.{number}") is None
    assert not logged_in(throttle, "ann@example.com", "192.0.2.1")
    assert logged_in(throttle, "ann@example.com", owner)
    # Known to the password checks too, for that account only (each attempt given back).
    for email, known in (("ann@example.com", True), ("bob@example.com", False)):
        attempt = asyncio.run(throttle.login(email, owner))
        assert attempt.known is known
        asyncio.run(throttle.give_back(attempt))
    # The owner's own mistakes still count against that address alone.
    for _ in range(5):
        assert failed_login(throttle, "ann@example.com", owner) is None
    assert failed_login(throttle, "ann@example.com", owner) is not None
    # An address is known for one account only, and for a while.
    assert not logged_in(throttle, "ann@example.com", "192.0.2.1")
    clock.now += 29 * 86_400
    assert logged_in(throttle, "ann@example.com", owner)  # the window ended; known again
    clock.now += 30 * 86_400 + 1
    for number in range(5):
        assert failed_login(throttle, "ann@example.com", f"203.0.113.{number}") is None
    assert not logged_in(throttle, "ann@example.com", owner)  # not logged in for 30 days


def test_the_owners_addresses_share_a_budget_of_their_own() -> None:
    """Each address the owner logged in from had 5 tries of its own beside the strangers' 5:
    anyone sharing those addresses (a NAT, a VPN's exit) added 5 guesses each."""
    throttle = make_throttle(WindowCounter(clock=FakeClock()))
    homes = [f"198.51.100.{number}" for number in range(4)]
    for home in homes:
        assert logged_in(throttle, "ann@example.com", home)
    for number in range(5):
        assert failed_login(throttle, "ann@example.com", homes[number % 4]) is None
    assert failed_login(throttle, "ann@example.com", homes[1]) is not None
    for number in range(5):  # strangers have theirs
        assert failed_login(throttle, "ann@example.com", f"203.0.113.{number}") is None
    assert failed_login(throttle, "ann@example.com", "203.0.113.99") is not None


def test_an_ipv6_network_is_one_client() -> None:
    """A host holds a whole /64 and may send from any address in it."""
    throttle = make_throttle(WindowCounter(clock=FakeClock()))
    for number in range(5):
        assert failed_login(throttle, "ann@example.com", f"2001:db8:1:2::{number:x}") is None
    assert failed_login(throttle, "ann@example.com", "2001:db8:1:2:ffff::1") is not None
    assert client_network("2001:db8:1:2:abcd::1") == "2001:db8:1:2::/64"
    assert client_network("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_network("testclient") == client_network("010.0.0.1") == "not an address"


def test_known_clients_stay_bounded_per_account_and_in_all() -> None:
    """One account logging in from ever new addresses could push every other account's known
    addresses out; now it keeps only its own newest."""
    clock = FakeClock()
    counter = WindowCounter(max_keys=100, clock=clock)
    throttle = make_throttle(counter)
    assert logged_in(throttle, "owner@example.com", "198.51.100.7")
    for number in range(1000):
        assert logged_in(throttle, "attacker@example.com", f"10.{number // 250}.0.{number % 250}")
        clock.now += 0.01
    assert len(counter._known) == 2
    assert max(len(clients) for clients in counter._known.values()) == 16
    for number in range(5):
        assert failed_login(throttle, "owner@example.com", f"203.0.113.{number}") is None
    assert logged_in(throttle, "owner@example.com", "198.51.100.7")
    for number in range(200):
        assert logged_in(throttle, f"user{number}@example.com", "192.0.2.1")
    assert len(counter._known) <= 100


def test_waits_are_said_in_minutes_beyond_one() -> None:
    assert [in_words(s) for s in (1, 40, 60, 61, 898, 900)] == [
        "1 second",
        "40 seconds",
        "1 minute",
        "2 minutes",
        "15 minutes",
        "15 minutes",
    ]


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
            assert refused.json()["detail"].startswith("Too many failed logins; try again in")
        keys = redis.Redis.from_url(redis_url).keys("imgclf:attempts:*")
    # Failures per email from strangers, per email and address and per address; every login
    # per email and address.
    assert len(keys) == 4
    assert not any(alice.email.encode() in key or b"testclient" in key for key in keys)


def test_api_processes_sharing_redis_count_successful_logins_together(
    database_url: str, redis_url: str, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    settings = Settings(database_url=database_url, queue_url=redis_url, login_max_per_email=3)
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        for client in (first, second, first):
            assert attempt(client, alice.email, PASSWORD).status_code == 200
        for client in (second, first):
            refused = attempt(client, alice.email, PASSWORD)
            assert refused.status_code == 429
            assert refused.json()["detail"].startswith("Too many logins; try again in")


def test_api_processes_sharing_redis_know_the_owners_address_together(redis_url: str) -> None:
    """The owner logged in through one replica; strangers' failures came through the others."""

    async def attack() -> tuple[list[bool], bool, bool]:
        replicas = [
            make_throttle(RedisWindowCounter(redis_url, WindowCounter(), prefix="test:known"))
            for _ in range(3)
        ]
        owner = await replicas[0].login("ann@example.com", "198.51.100.7")
        await replicas[0].succeeded(owner, "ann@example.com", "198.51.100.7")
        guesses = []
        for number in range(5):
            replica = replicas[1 + number % 2]
            try:
                await replica.login("ann@example.com", f"203.0.113.{number}")
                guesses.append(True)
            except AttemptsRefused:
                guesses.append(False)
        stranger_refused = owner_admitted = False
        try:
            await replicas[2].login("ann@example.com", "192.0.2.1")
        except AttemptsRefused:
            stranger_refused = True
        with contextlib.suppress(AttemptsRefused):
            # Known: the password check may take the places kept for owners.
            owner_admitted = (await replicas[1].login("ann@example.com", "198.51.100.7")).known
        for replica in replicas:
            await replica.close()
        return guesses, stranger_refused, owner_admitted

    guesses, stranger_refused, owner_admitted = asyncio.run(attack())
    assert guesses == [True] * 5
    assert stranger_refused
    assert owner_admitted
    keys = redis.Redis.from_url(redis_url).keys("test:known:*")
    assert keys
    assert not any(b"ann" in key or b"198.51" in key for key in keys)  # HMACs only


def test_without_redis_the_throttle_still_counts_in_process(
    database_url: str, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with TestClient(create_app(Settings(database_url=database_url, queue_url=nowhere))) as client:
        for _ in range(5):
            assert attempt(client, alice.email, "wrong password").status_code == 401
        assert attempt(client, alice.email, PASSWORD).status_code == 429


def test_a_redis_that_hangs_is_waited_for_once_not_at_every_login() -> None:
    """A Redis that accepts connections and never answers (stopped, or its host overloaded).
    Before: every login waited for its Redis calls' timeouts (a successful one 4 s). Now the
    first waits for one timeout and the next ones, for a while, count in process at once;
    they are still counted."""
    silent = socket.create_server(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]

    async def logins() -> tuple[list[float], int | None]:
        counter = RedisWindowCounter(f"redis://127.0.0.1:{port}/0", WindowCounter())
        throttle = make_throttle(counter)
        took = []
        for number in range(5):
            started = time.perf_counter()
            await throttle.login("ann@example.com", f"203.0.113.{number}")
            took.append(time.perf_counter() - started)
        try:
            await throttle.login("ann@example.com", "203.0.113.99")
            refused = None
        except AttemptsRefused as error:
            refused = error.retry_after_s
        await counter.close()
        return took, refused

    try:
        took, refused = asyncio.run(logins())
    finally:
        silent.close()
    print(f"\nlogins against a silent Redis took {[round(t, 3) for t in took]} s")
    assert took[0] >= 0.9  # the first waited for the socket's timeout (1 s)
    assert max(took[1:]) < 0.5  # the others did not wait on Redis again
    assert refused is not None  # and the in-process count held the strangers' budget


def test_what_a_process_counted_while_redis_hung_reaches_redis_when_it_answers_again(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strangers' failures counted in process during an outage (or a burst that made one) were
    never told to Redis, which then gave the same budget again: 5 more checks per process and
    outage. And a process that fell back refused the owner whom Redis knew."""
    monkeypatch.setattr("imgclf.api.auth.shared_throttle.RETRY_AFTER_S", 0.2)
    pause = redis.Redis.from_url(redis_url)

    async def outage() -> dict[str, object]:
        first, second = (
            make_throttle(RedisWindowCounter(redis_url, WindowCounter(), prefix="test:outage"))
            for _ in range(2)
        )
        owner = "198.51.100.7"
        attempt = await first.login("ann@example.com", owner)
        await first.succeeded(attempt, "ann@example.com", owner)
        await second.login("ann@example.com", owner)  # the second process meets the owner
        pause.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        strangers = 0
        for number in range(5):
            with contextlib.suppress(AttemptsRefused):
                await second.login("ann@example.com", f"203.0.113.{number}")
                strangers += 1
        owner_in_outage = True
        try:
            await second.login("ann@example.com", owner)
        except AttemptsRefused:
            owner_in_outage = False
        await asyncio.sleep(1.6)  # Redis answers again
        # The second's next logins tell it, four at once (each took the first missed call and
        # removed another one, which Redis then never heard of).
        await asyncio.gather(*(second.login(f"user{n}@example.com", "192.0.2.1") for n in range(4)))
        try:
            await first.login("ann@example.com", "203.0.113.99")
            stranger_after = "admitted"
        except AttemptsRefused:
            stranger_after = "refused"
        for throttle in (first, second):
            await throttle.close()
        return {"strangers": strangers, "owner": owner_in_outage, "after": stranger_after}

    try:
        seen = asyncio.run(outage())
    finally:
        pause.execute_command("CLIENT", "UNPAUSE")
        pause.close()
    assert seen == {"strangers": 5, "owner": True, "after": "refused"}
