"""Rules for users; services flush, the unit of work around them commits."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imgclf.api.predictions.uploads import hold_uploads, recorded_names, remove_uploads
from imgclf.db.models import Prediction, User


class EmailTaken(Exception):
    """Another account already has this email."""


class AccountGoneError(Exception):
    """The account a valid token (or a checked password) names was deleted since."""


def hold_user(session: Session, user_id: int, *, exclusive: bool = False) -> None:
    """Hold the user's row until the commit, before any row that refers to it (PostgreSQL;
    SQLite's writer holds the whole database), or raise AccountGoneError.

    An account's deletion takes the row first too (FOR UPDATE), then its predictions',
    feedback's and sessions' rows. A writer that reached one of those first and the user's row
    only later, through its insert's foreign-key check, waited for the deletion while the
    deletion waited for it: a deadlock, which PostgreSQL breaks by failing one of them.
    ``exclusive`` (FOR NO KEY UPDATE) also makes the user's own such writers take turns; the
    default (FOR KEY SHARE) only keeps the row from being deleted."""
    held = select(User.id).where(User.id == user_id)
    held = held.with_for_update(read=not exclusive, key_share=True)
    if session.scalar(held) is None:
        raise AccountGoneError(user_id)


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


def delete_user(session: Session, user: User, upload_dir: Path) -> None:
    """Delete a user; the database's ON DELETE CASCADE removes their predictions and feedback,
    and the uploads no one else recorded are removed from ``upload_dir``."""
    # The user's row first (FOR UPDATE), then the uploads: the order the recorder takes them in.
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    names = set(
        session.scalars(
            select(Prediction.image_file_name).where(Prediction.user_id == user.id).distinct()
        )
    )
    hold_uploads(session, removing=True)
    session.delete(user)
    session.flush()
    # Removed before the commit, while the uploads are held: a failed commit leaves the account
    # without its images, never another user's row without its file.
    remove_uploads(upload_dir, names - recorded_names(session, names))
