"""Emails with an internationalized domain, stored as their ASCII (IDNA) form: sign-up and login
now keep and look up ``ann@xn--bcher-kva.de`` for ``ann@bücher.de`` (a look-alike domain then
shows), so an account stored with its Unicode domain before could no longer log in, and could
be signed up again. One whose ASCII form another account already has keeps its email.

Revision ID: 0009_ascii_email_domains
Revises: 0008_feedback_bytes
Create Date: 2026-12-03 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from email_validator import EmailNotValidError, validate_email

revision: str = "0009_ascii_email_domains"
down_revision: str | None = "0008_feedback_bytes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ascii_domain(email: str) -> str | None:
    try:
        checked = validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return None
    return checked.ascii_email.lower() if checked.ascii_email else None


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT email, id FROM users")).all()
    emails: dict[str, int] = {str(email): int(user_id) for email, user_id in rows}
    for email, user_id in list(emails.items()):
        if email.isascii():
            continue
        plain = _ascii_domain(email)
        if plain is None or plain == email or plain in emails:
            continue
        connection.execute(
            sa.text("UPDATE users SET email = :plain WHERE id = :id"),
            {"plain": plain, "id": user_id},
        )
        emails[plain] = user_id


def downgrade() -> None:
    pass  # the ASCII form is the same address
