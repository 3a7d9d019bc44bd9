"""Looking up what a login is checked against."""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imgclf.db.models import User


@dataclass(frozen=True, slots=True)
class Credentials:
    user_id: int
    password_hash: str


def normalize_email(email: str) -> str:
    """The email as accounts are kept: lower-cased, a domain in Unicode (bücher.de) in its
    ASCII form (xn--bcher-kva.de), as sign-up stores it."""
    email = email.strip().lower()
    if email.isascii():
        return email
    try:
        return (validate_email(email, check_deliverability=False).ascii_email or email).lower()
    except EmailNotValidError:
        return email  # no account has it: the login fails as any unknown email does


def find_credentials(session: Session, email: str) -> Credentials | None:
    """The id and password hash of the account with this (normalized) email, if any."""
    if "\x00" in email:  # no stored email holds one, and PostgreSQL refuses it even in a query
        return None
    row = session.execute(
        select(User.id, User.hashed_password).where(User.email == email)
    ).one_or_none()
    return Credentials(row.id, row.hashed_password) if row else None


def renew_password_hash(session: Session, user_id: int, old_hash: str, new_hash: str) -> None:
    """Store a password's hash made at today's cost in place of ``old_hash``, unless the
    password was changed meanwhile (then the newer hash stays)."""
    session.execute(
        update(User)
        .where(User.id == user_id, User.hashed_password == old_hash)
        .values(hashed_password=new_hash)
    )
