"""Schema migrations and the admin user: what ``imgclf populate`` does, safe to run concurrently."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import IntegrityError

from imgclf.db.engine import Database
from imgclf.db.models import User
from imgclf.settings import Settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any constant works: it only has to be the same for every process that migrates.
_MIGRATION_LOCK_ID = 4_242_001


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision; on PostgreSQL under an advisory lock."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Several containers may run `populate` at once: one migrates, the others
            # wait here and then find nothing left to do.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
            )
        command.upgrade(alembic_config(connection), "head")


def schema_is_current(engine: Engine) -> bool:
    """True when the database is at the newest revision (production start-up only checks)."""
    heads = set(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads()) == heads


def ensure_admin(database: Database, settings: Settings, password_hash: str) -> bool:
    """Create the admin from settings unless that email exists; True if it was created."""
    # As sign-up and login spell it (an internationalized domain in its ASCII form).
    from imgclf.api.auth.service import normalize_email

    email = normalize_email(settings.admin_email)
    try:
        with database.transaction() as session:
            if database.engine.dialect.name == "postgresql":
                session.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
                )
            exists = session.scalar(select(User.id).where(User.email == email))
            if exists is not None:
                return False
            session.add(
                User(
                    name=settings.admin_name,
                    email=email,
                    hashed_password=password_hash,
                    is_admin=True,
                )
            )
    except IntegrityError:
        # SQLite has no advisory lock: another process created the admin between our
        # check and our insert, which is the outcome we wanted.
        return False
    return True
