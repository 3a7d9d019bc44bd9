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
from tests.support import DEFAULT_ARGON2


def production(database_url: str) -> Settings:
    return Settings(
        env="production",
        database_url=database_url,
        secret_key="a-production-secret-key-of-forty-characters",
        admin_password="a strong admin password",
        **DEFAULT_ARGON2,
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


@pytest.mark.parametrize(
    ("page", "assets"),
    [("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]), ("/redoc", ["redoc.standalone.js"])],
)
def test_the_docs_pages_bring_their_own_scripts(
    client: TestClient, page: str, assets: list[str]
) -> None:
    html = client.get(page).text
    assert "https://" not in html, "a script, style or font from another site"
    for asset in assets:
        assert f"/static-offline-docs/{asset}" in html
        served = client.get(f"/static-offline-docs/{asset}")
        assert served.status_code == 200
        assert len(served.content) > 100_000


def test_the_api_description_says_how_to_try_it_and_operations_have_plain_ids(
    client: TestClient,
) -> None:
    schema = client.get("/openapi.json").json()
    assert "Authorize" in schema["info"]["description"]
    operations = [op for path in schema["paths"].values() for op in path.values()]
    assert {op["operationId"] for op in operations} >= {"predict", "login", "create_user"}
    assert all(op.get("summary") for op in operations)
