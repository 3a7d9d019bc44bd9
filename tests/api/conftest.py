"""A fresh app per test on a real database (SQLite file and PostgreSQL), and users to call it.

Argon2 costs about a quarter of a second per hash on purpose, so most tests get their users
inserted with one hash computed per session and their tokens minted directly; the login tests
go through ``POST /login`` for real.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from imgclf.api.app import create_app
from imgclf.api.security import create_access_token, hash_password
from imgclf.api.state import app_state
from imgclf.db.models import User
from imgclf.settings import Settings
from tests.support import CHEAP_HASHING

PASSWORD = "correct horse battery"
_emails = itertools.count(1)


@dataclass(frozen=True)
class Caller:
    id: int
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """Runs the app's lifespan: migrations and the admin user, as ``imgclf serve`` does."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD, CHEAP_HASHING)


def caller_for(app: FastAPI, user: User) -> Caller:
    return Caller(user.id, user.email, create_access_token(user.id, app_state(app).settings))


@pytest.fixture
def make_user(client: TestClient, app: FastAPI, password_hash: str) -> Callable[..., Caller]:
    """Insert a user whose password is ``PASSWORD``; returns its id, email and a valid token."""

    def make(name: str = "Test User", email: str | None = None, is_admin: bool = False) -> Caller:
        email = email or f"user{next(_emails)}@example.com"
        with app_state(app).database.transaction() as session:
            user = User(name=name, email=email, hashed_password=password_hash, is_admin=is_admin)
            session.add(user)
            session.flush()
            return caller_for(app, user)

    return make


@pytest.fixture
def admin(client: TestClient, app: FastAPI) -> Caller:
    """The admin the lifespan created from settings."""
    email = app_state(app).settings.admin_email
    with app_state(app).database.transaction() as session:
        user = session.scalars(select(User).where(User.email == email)).one()
        return caller_for(app, user)
