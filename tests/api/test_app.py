"""The app factory's lifespan: what it prepares in development and only checks in production."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from imgclf.api.app import SchemaOutdatedError, create_app
from imgclf.api.state import app_state
from imgclf.db.engine import make_engine
from imgclf.db.migrate import upgrade
from imgclf.db.models import User
from imgclf.settings import Settings


def production(database_url: str) -> Settings:
    return Settings(
        env="production",
        database_url=database_url,
        secret_key="a-production-secret-key-of-forty-characters",
        admin_password="a strong admin password",
    )


def test_development_start_up_migrates_and_creates_the_admin(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app) as client:
        assert settings.upload_dir.is_dir()
        login = client.post("/login", data={"username": "admin@example.com", "password": "admin"})
        assert login.status_code == 200
        with app_state(app).database.transaction() as session:
            admin = session.scalars(select(User)).one()
            assert (admin.email, admin.is_admin) == ("admin@example.com", True)
    restarted = create_app(settings)  # a restart changes nothing
    with TestClient(restarted), app_state(restarted).database.transaction() as session:
        assert len(session.scalars(select(User)).all()) == 1


def test_production_refuses_to_start_on_an_unmigrated_database(database_url: str) -> None:
    with (
        pytest.raises(SchemaOutdatedError, match="run `imgclf populate`"),
        TestClient(create_app(production(database_url))),
    ):
        pass


def test_production_start_up_checks_but_changes_nothing(database_url: str) -> None:
    settings = production(database_url)
    engine = make_engine(settings)
    upgrade(engine)
    with TestClient(create_app(settings)) as client:
        assert client.get("/").status_code == 200
        with engine.connect() as connection:
            assert connection.scalars(select(User.id)).all() == []  # populate creates the admin
    engine.dispose()
