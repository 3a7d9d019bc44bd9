"""Shadow comparisons: a live version's answer beside its candidate's, per sampled upload.

Revision ID: 0005_shadow
Revises: 0004
Create Date: 2026-12-01 03:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_shadow"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shadow_comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("live", sa.String(length=200), nullable=False),
        sa.Column("candidate", sa.String(length=200), nullable=False),
        sa.Column("agreed", sa.Boolean(), nullable=False),
        sa.Column("top5_overlap", sa.Integer(), nullable=False),
        sa.Column("score_difference", sa.Float(), nullable=False),
        sa.Column("live_latency_ms", sa.Float(), nullable=False),
        sa.Column("candidate_latency_ms", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_comparisons")),
    )
    op.create_index(
        "ix_shadow_comparisons_model_created_at",
        "shadow_comparisons",
        ["model", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_shadow_comparisons_model_created_at", table_name="shadow_comparisons")
    op.drop_table("shadow_comparisons")
