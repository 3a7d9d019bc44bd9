"""Checking an email and password against the users table."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from imgclf.api.security import verify_password
from imgclf.db.models import User


def normalize_email(email: str) -> str:
    return email.strip().lower()


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user with this email and password, else None; as slow for an unknown email."""
    email = normalize_email(email)
    # No stored email holds a NUL, and PostgreSQL refuses one even in a query.
    user = None if "\x00" in email else session.scalar(select(User).where(User.email == email))
    if not verify_password(password, user.hashed_password if user else None):
        return None
    return user
