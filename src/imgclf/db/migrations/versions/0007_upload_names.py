"""An index on the uploads' file names, for the question "does anyone's prediction still name
this file?" that an account's deletion and the history's retention ask before removing an
upload. Without it each question read the whole table, under the write lock: 0.68 s for a batch
of 2,000 names at a million predictions, while every recorder waited.

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

_INDEX = "ix_predictions_image_file_name"


def upgrade() -> None:
    op.create_index(_INDEX, "predictions", ["image_file_name"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="predictions")
