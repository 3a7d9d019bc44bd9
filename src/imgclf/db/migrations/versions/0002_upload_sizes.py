"""Each prediction's upload size, so that what a user stores can be counted against a quota.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows from before count as 0 bytes: the quota counts what is stored from now on.
    op.add_column(
        "predictions",
        sa.Column("image_bytes", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_index(
        "ix_predictions_user_id_image_file_name",
        "predictions",
        ["user_id", "image_file_name"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_user_id_image_file_name", table_name="predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("image_bytes")
