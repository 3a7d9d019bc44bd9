"""Feedback carries a verdict (right or wrong, and the right class), one per prediction;
predictions are indexed by time, for the quality figures' windows.

Older rows are brought along: feedback without a prediction is linked to its author's newest
prediction of the same image made before it; the verdict is read from the wording the UI used
("Correct." / "Wrong. Right class: X."); where a prediction had several, the newest stays
linked and the older ones are kept unlinked.

Revision ID: 0003_feedback
Revises: 0002
Create Date: 2026-12-01 02:40:00
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_feedback"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

feedbacks = sa.table(
    "feedbacks",
    sa.column("id", sa.Integer),
    sa.column("user_id", sa.Integer),
    sa.column("prediction_id", sa.Integer),
    sa.column("image_file_name", sa.String),
    sa.column("feedback", sa.Text),
    sa.column("created_at", sa.DateTime),
    sa.column("correct", sa.Boolean),
    sa.column("correct_class", sa.String),
)
predictions = sa.table(
    "predictions",
    sa.column("id", sa.Integer),
    sa.column("user_id", sa.Integer),
    sa.column("image_file_name", sa.String),
    sa.column("created_at", sa.DateTime),
)
# What the UI wrote before the verdict had fields of its own.
_UI_RIGHT_CLASS = re.compile(r"Wrong\. Right class: (.{1,200}?)\.(?:\s|$)")


def upgrade() -> None:
    op.add_column("feedbacks", sa.Column("correct", sa.Boolean(), nullable=True))
    op.add_column("feedbacks", sa.Column("correct_class", sa.String(length=200), nullable=True))
    op.add_column("feedbacks", sa.Column("correct_wnid", sa.String(length=20), nullable=True))
    _link_to_predictions()
    _read_verdicts()
    _keep_newest_per_prediction()
    op.drop_index("ix_feedbacks_prediction_id", table_name="feedbacks")
    op.create_index("ix_feedbacks_prediction_id", "feedbacks", ["prediction_id"], unique=True)
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"], unique=False)


def _link_to_predictions() -> None:
    newest_before = (
        sa.select(predictions.c.id)
        .where(
            predictions.c.user_id == feedbacks.c.user_id,
            predictions.c.image_file_name == feedbacks.c.image_file_name,
            predictions.c.created_at <= feedbacks.c.created_at,
        )
        .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    op.execute(
        feedbacks.update()
        .where(feedbacks.c.prediction_id.is_(None))
        .values(prediction_id=newest_before)
    )


def _read_verdicts() -> None:
    for prefix, verdict in (("Correct.", True), ("Wrong.", False)):
        op.execute(
            feedbacks.update()
            .where(feedbacks.c.feedback.like(f"{prefix}%"))
            .values(correct=verdict)
        )
    connection = op.get_bind()
    corrected = connection.execute(
        sa.select(feedbacks.c.id, feedbacks.c.feedback).where(
            feedbacks.c.feedback.like("Wrong. Right class: %")
        )
    ).all()
    for row_id, text in corrected:
        match = _UI_RIGHT_CLASS.match(text)
        if match:
            connection.execute(
                feedbacks.update()
                .where(feedbacks.c.id == row_id)
                .values(correct_class=match.group(1))
            )


def _keep_newest_per_prediction() -> None:
    newer = feedbacks.alias("newer")
    has_newer = (
        sa.select(newer.c.id)
        .where(newer.c.prediction_id == feedbacks.c.prediction_id, newer.c.id > feedbacks.c.id)
        .exists()
    )
    op.execute(
        feedbacks.update()
        .where(feedbacks.c.prediction_id.is_not(None), has_newer)
        .values(prediction_id=None)
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_created_at", table_name="predictions")
    op.drop_index("ix_feedbacks_prediction_id", table_name="feedbacks")
    op.create_index("ix_feedbacks_prediction_id", "feedbacks", ["prediction_id"], unique=False)
    with op.batch_alter_table("feedbacks") as batch:
        batch.drop_column("correct_wnid")
        batch.drop_column("correct_class")
        batch.drop_column("correct")
