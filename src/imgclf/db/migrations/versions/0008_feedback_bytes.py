"""Each user's feedback notes as a running total of their UTF-8 bytes, for the feedback quota:
a note may hold 2,000 characters (8 KB of emoji), a user 100,000 predictions with a note each,
so without a bound one account could add 800 MB to the database through its notes alone.

Revision ID: 0008_feedback_bytes
Revises: 0007_upload_names
Create Date: 2026-12-02 16:30:00
"""

from collections import Counter
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_feedback_bytes"
down_revision: str | None = "0007_upload_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("feedback_bytes", sa.BigInteger(), server_default="0", nullable=False),
    )
    # Counted in Python: SQLite's length() counts characters, and the quota counts bytes. Notes
    # on no prediction (sent before feedback had to name one) are left out: nothing can replace
    # or sweep them, so they could never be given back.
    connection = op.get_bind()
    totals: Counter[int] = Counter()
    notes = connection.execute(
        sa.text(
            "SELECT user_id, feedback FROM feedbacks WHERE prediction_id IS NOT NULL"
        ).execution_options(yield_per=1000)
    )
    for user_id, note in notes:
        totals[user_id] += len((note or "").encode())
    if totals:
        connection.execute(
            sa.text("UPDATE users SET feedback_bytes = :total WHERE id = :user_id"),
            [{"user_id": user_id, "total": total} for user_id, total in totals.items()],
        )


def downgrade() -> None:
    # Not a batch operation: see 0006.
    op.drop_column("users", "feedback_bytes")
