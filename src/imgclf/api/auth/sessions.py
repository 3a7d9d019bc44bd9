"""Logins that renew their access tokens: an opaque refresh token, stored only as its SHA-256.

A refresh token is asked for with the OAuth2 scope ``offline_access`` at ``/login``, so clients
that only want an access token (scripts, load tests) leave no row behind. It is not rotated:
every tab of one browser shares it through a cookie, and a rotation in one tab would log the
others out. It ends when it expires, when its user logs out, or when the user is deleted.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from imgclf.api.users.service import hold_user
from imgclf.db.models import LoginSession

OFFLINE_ACCESS = "offline_access"
# 32 random bytes, URL-safe: 43 characters. Longer input is not a token of ours.
MAX_TOKEN_LENGTH = 128
# Successful logins are not throttled: without a bound, a script knowing its own password
# could add a row per login for as long as it ran. Enough for every browser and device one
# person uses; a login beyond it ends the oldest.
MAX_SESSIONS_PER_USER = 50


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive timestamps; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def start_session(session: Session, user_id: int, lifetime: timedelta) -> str:
    """A new refresh token for ``user_id``; the user's expired sessions, and those beyond the
    newest ``MAX_SESSIONS_PER_USER``, are swept meanwhile. Raises AccountGoneError."""
    # The user's logins take turns: two sweeping each other's rows could deadlock otherwise.
    hold_user(session, user_id, exclusive=True)
    now = datetime.now(UTC)
    session.execute(
        delete(LoginSession).where(LoginSession.user_id == user_id, LoginSession.expires_at < now)
    )
    token = secrets.token_urlsafe(32)
    session.add(LoginSession(user_id=user_id, token_hash=_hash(token), expires_at=now + lifetime))
    session.flush()
    oldest = (
        select(LoginSession.id)
        .where(LoginSession.user_id == user_id)
        .order_by(LoginSession.id.desc())
        .offset(MAX_SESSIONS_PER_USER)
    )
    session.execute(delete(LoginSession).where(LoginSession.id.in_(oldest.scalar_subquery())))
    return token


def session_user(session: Session, token: str) -> int | None:
    """The user a live refresh token belongs to; None when unknown, expired or ended."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    row = session.execute(
        select(LoginSession.user_id, LoginSession.expires_at).where(
            LoginSession.token_hash == _hash(token)
        )
    ).one_or_none()
    if row is None or _aware(row.expires_at) <= datetime.now(UTC):
        return None
    return int(row.user_id)


def end_session(session: Session, token: str) -> None:
    """Forget the refresh token (logging out); unknown tokens are ignored."""
    if token and len(token) <= MAX_TOKEN_LENGTH:
        session.execute(delete(LoginSession).where(LoginSession.token_hash == _hash(token)))
