"""The migrations build the models' schema from nothing, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import Session

from imgclf.api.security import hash_password
from imgclf.db.base import Base
from imgclf.db.engine import Database, make_engine
from imgclf.db.migrate import ensure_admin, schema_is_current, upgrade
from imgclf.db.models import Feedback, Prediction, User
from imgclf.settings import Settings
from tests.support import CHEAP_HASHING


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


def test_upgrade_from_empty_builds_every_table(engine: Engine) -> None:
    assert not schema_is_current(engine)
    upgrade(engine)
    assert schema_is_current(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"users", "predictions", "feedbacks", "alembic_version"} <= tables
    upgrade(engine)  # at head already: nothing to do, no error


def test_models_and_migrations_agree(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_ensure_admin_is_idempotent(engine: Engine, settings: Settings) -> None:
    upgrade(engine)
    password_hash = hash_password("admin", CHEAP_HASHING)
    database = Database(engine)
    assert ensure_admin(database, settings, password_hash) is True
    assert ensure_admin(database, settings, password_hash) is False
    with Session(engine) as session:
        admins = session.scalars(select(User)).all()
        assert [(u.email, u.is_admin) for u in admins] == [("admin@example.com", True)]


def test_deleting_a_user_cascades_in_the_database(engine: Engine) -> None:
    upgrade(engine)
    with Session(engine) as session, session.begin():
        user = User(name="Ada", email="ada@example.com", hashed_password="x")
        session.add(user)
        session.flush()
        prediction = Prediction(
            user_id=user.id,
            image_file_name="a.jpg",
            label="Eskimo_dog",
            score=0.5,
            top_k=[],
            model_id="m",
            latency_ms=1.0,
        )
        session.add(prediction)
        session.flush()
        session.add(
            Feedback(
                user_id=user.id,
                prediction_id=prediction.id,
                score=0.5,
                predicted_class="Eskimo_dog",
                image_file_name="a.jpg",
                feedback="ok",
            )
        )
    with engine.begin() as connection:  # plain SQL: the database itself must cascade
        connection.execute(text("DELETE FROM users"))
        for table in ("predictions", "feedbacks"):
            assert connection.scalar(text(f"SELECT count(*) FROM {table}")) == 0  # noqa: S608


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(Settings(database_url=f"sqlite:///{tmp_path}/pragmas.db"))
    with engine.connect() as connection:
        assert connection.scalar(text("PRAGMA journal_mode")) == "wal"
        assert connection.scalar(text("PRAGMA foreign_keys")) == 1
    engine.dispose()
