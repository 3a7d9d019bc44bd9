"""Dependencies as ``Annotated`` aliases: settings, the request's session, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker

from imgclf.api.security import InvalidTokenError, decode_access_token
from imgclf.db.models import User
from imgclf.settings import Settings

# Ids are 32-bit integers in the database: a larger one is refused before it reaches a query.
MAX_ID = 2**31 - 1


def id_path(description: str) -> Any:
    """A path parameter that names a row: 1..MAX_ID, else 422."""
    return Path(ge=1, le=MAX_ID, description=description)


# tokenUrl is relative, so /docs' "Authorize" button works behind a path prefix too.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="login")


def get_settings_from_app(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]


def get_session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]


def get_session(factory: SessionFactoryDep) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises.

    Services only ``flush()``. The ``function`` scope commits before the response is sent, so
    a failed commit becomes an error answer instead of a success that was never stored.
    """
    with factory() as session, session.begin():
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
TokenDep = Annotated[str, Depends(oauth2_scheme)]


def credentials_error() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _load_user(session: Session, token: str, settings: Settings) -> User:
    try:
        user_id = decode_access_token(token, settings)
    except InvalidTokenError:
        raise credentials_error() from None
    user = session.get(User, user_id)
    if user is None:  # deleted since the token was issued
        raise credentials_error()
    return user


def get_current_user(session: SessionDep, token: TokenDep, settings: SettingsDep) -> User:
    return _load_user(session, token, settings)


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Only administrators may do this")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    """Who is calling, detached from any session."""

    id: int
    email: str
    name: str
    is_admin: bool


def get_current_user_short(
    factory: SessionFactoryDep, token: TokenDep, settings: SettingsDep
) -> AuthenticatedUser:
    """Authenticate in a session of its own that is closed before the route runs.

    For routes that wait on something slow (the model): holding a pooled connection while
    waiting would let a few dozen uploads exhaust the pool for every other route.
    """
    with factory() as session:
        user = _load_user(session, token, settings)
        return AuthenticatedUser(
            id=user.id, email=user.email, name=user.name, is_admin=user.is_admin
        )


CurrentUserId = Annotated[AuthenticatedUser, Depends(get_current_user_short)]


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


def get_page(
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    # Bounded like ids: a larger offset only overflows the database's integer (a 500).
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Items to skip.")] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(get_page)]
