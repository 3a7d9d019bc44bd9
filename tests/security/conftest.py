"""Shared pieces of the security tests: an embedded service with the real model, and callers.

Building an app loads the model (about a second), so the tests that only call routes share
one service per module; each test makes its own users, so no test depends on another's data.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from imgclf.api.security import create_access_token, hash_password
from imgclf.api.state import app_state
from imgclf.db.models import User
from imgclf.serving import create_service_app
from imgclf.settings import Settings
from tests.api.conftest import PASSWORD, Caller
from tests.support import CHEAP_HASHING

_emails = itertools.count(1)


@dataclass
class Service:
    """A running app, its settings and a client; ``make_user`` inserts a user and mints a token."""

    app: FastAPI
    client: TestClient
    settings: Settings
    password_hash: str

    def make_user(self, name: str = "Test User", *, is_admin: bool = False) -> Caller:
        email = f"sec{next(_emails)}-{id(self)}@example.com"
        with app_state(self.app).database.transaction() as session:
            user = User(
                name=name, email=email, hashed_password=self.password_hash, is_admin=is_admin
            )
            session.add(user)
            session.flush()
            return Caller(user.id, email, create_access_token(user.id, self.settings))

    def admin(self) -> Caller:
        with app_state(self.app).database.transaction() as session:
            user = session.scalars(select(User).where(User.email == self.settings.admin_email))
            admin = user.one()
            return Caller(admin.id, admin.email, create_access_token(admin.id, self.settings))


@pytest.fixture(scope="package", autouse=True)
def _no_outside_settings() -> Iterator[None]:
    """The services here outlive one test, so they are built before the per-test settings
    reset: keep a developer's IMGCLF_* variables (a real database URL, say) out of them."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("IMGCLF_") and name != "IMGCLF_TEST_MODEL_DIR":
                patch.delenv(name)
        yield


def isolated_settings(**values: Any) -> Settings:
    """Settings from these values and the defaults only: no .env file is read."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def shared_password_hash() -> str:
    return hash_password(PASSWORD, CHEAP_HASHING)


def start_service(settings: Settings, password_hash: str) -> Iterator[Service]:
    app = create_service_app(settings)
    with TestClient(app) as client:
        yield Service(app, client, settings, password_hash)


@pytest.fixture(scope="module")
def embedded(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, shared_password_hash: str
) -> Iterator[Service]:
    """The embedded service (SQLite, in-process worker, real model) shared by a module."""
    data_dir = tmp_path_factory.mktemp("service") / "data"
    settings = isolated_settings(
        data_dir=data_dir, model_dir=model_dir, model_threads=1, cache=False
    )
    yield from start_service(settings, shared_password_hash)
