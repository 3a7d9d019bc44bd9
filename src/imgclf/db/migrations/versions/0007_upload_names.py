"""An index on the uploads' file names, for the question "does anyone's prediction still name
this file?" that an account's deletion and the history's retention ask before removing an
upload: without it each question read the whole table, under the write lock (0.68 s for 2,000
names at a million predictions, while every recorder waited). And the index on each user's
predictions takes their ids too, so the retention walks them in id order from either end
(SQLite's index on the user already ended with the row id; PostgreSQL's sorted the user's
rows each time). It replaces the index on the user alone, which it serves as well.

Revision ID: 0007_upload_names
Revises: 0006_storage
Create Date: 2026-12-02 05:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_upload_names"
down_revision: str | None = "0006_storage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAMES = "ix_predictions_image_file_name"
_USER_IDS = "ix_predictions_user_id_id"
_USER = "ix_predictions_user_id"


def upgrade() -> None:
    op.create_index(_NAMES, "predictions", ["image_file_name"])
    op.create_index(_USER_IDS, "predictions", ["user_id", "id"])
    op.drop_index(_USER, table_name="predictions")


def downgrade() -> None:
    op.create_index(_USER, "predictions", ["user_id"])
    op.drop_index(_USER_IDS, table_name="predictions")
    op.drop_index(_NAMES, table_name="predictions")
