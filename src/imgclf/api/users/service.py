"""Rules for users; services flush, the unit of work around them commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imgclf.db.models import User


class EmailTaken(Exception):
    """Another account already has this email."""


def email_exists(session: Session, email: str) -> bool:
    return session.scalar(select(User.id).where(User.email == email)) is not None


def create_user(session: Session, *, name: str, email: str, password_hash: str) -> User:
    if email_exists(session, email):
        raise EmailTaken(email)
    user = User(name=name, email=email, hashed_password=password_hash, is_admin=False)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        # Lost a race for this email: the request's transaction is rolled back with the error.
        raise EmailTaken(email) from None
    return user


def read_users(session: Session, *, limit: int, offset: int) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id).limit(limit).offset(offset)))


def get_user(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def delete_user(session: Session, user: User) -> None:
    """Delete a user; the database's ON DELETE CASCADE removes their predictions and feedback."""
    session.delete(user)
    session.flush()
