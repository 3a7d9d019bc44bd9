"""Alembic environment: runs on the connection handed over by ``imgclf.db.migrate``."""

from alembic import context

from imgclf.db import models  # noqa: F401 - registers the tables on the metadata
from imgclf.db.base import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `imgclf populate` (imgclf.db.migrate.upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
