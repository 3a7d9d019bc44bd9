"""Dependencies as ``Annotated`` aliases: settings, the database, password hashing, the caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from imgclf.api.auth.throttle import AttemptsRefused, AuthThrottle, in_words
from imgclf.api.errors import BEARER, CREDENTIALS_ERROR
from imgclf.api.security import InvalidTokenError, PasswordHasher
from imgclf.api.state import AppState, app_state
from imgclf.db.engine import Database
from imgclf.db.models import User
from imgclf.queue.base import JobQueue
from imgclf.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")

# Ids are 32-bit integers in the database: a larger one is refused before it reaches a query.
MAX_ID = 2**31 - 1


def id_path(description: str) -> Any:
    """A path parameter that names a row: 1..MAX_ID, else 422."""
    return Path(ge=1, le=MAX_ID, description=description)


# tokenUrl is relative, so /docs' "Authorize" button works behind a path prefix too.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="login")


# Dependencies that do no I/O are ``async``: FastAPI would run a plain ``def`` in a thread.
async def get_app_state(request: Request) -> AppState:
    return app_state(request.app)


StateDep = Annotated[AppState, Depends(get_app_state)]


async def get_settings_from_app(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]


@dataclass(frozen=True, slots=True)
class UnitsOfWork:
    """Runs units of work: each is one transaction, run whole in one worker thread.

    A request never keeps a pooled connection, or SQLite's write lock, while it waits for a
    free worker thread or for the model. With more requests in flight than threads or
    connections, such a wait would be a deadlock that only the pool or busy timeout breaks
    (measured: 39 of 80 concurrent feedback posts failed on SQLite, 6 of 80 on PostgreSQL).
    """

    database: Database
    writes: bool

    async def run(
        self, work: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``work(session, *args, **kwargs)`` in a transaction: committed if it returns."""

        def unit() -> T:
            with self.database.transaction(writes=self.writes) as session:
                return work(session, *args, **kwargs)

        return await run_in_threadpool(unit)


_READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_units_of_work(request: Request, state: StateDep) -> UnitsOfWork:
    """Units of work of requests that may write say so up front (on SQLite they begin
    IMMEDIATE: see ``imgclf.db.engine``)."""
    return UnitsOfWork(state.database, writes=request.method not in _READ_ONLY_METHODS)


DatabaseDep = Annotated[UnitsOfWork, Depends(get_units_of_work)]


async def get_password_hasher(state: StateDep) -> PasswordHasher:
    return state.password_hasher


PasswordHasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]


async def get_client_address(request: Request) -> str:
    """The caller's address as uvicorn reports it: the peer, or the client a trusted proxy
    names (only proxies listed in IMGCLF_TRUSTED_PROXIES are believed; see imgclf.serving)."""
    return request.client.host if request.client else "unknown"


ClientAddressDep = Annotated[str, Depends(get_client_address)]


async def get_auth_throttle(state: StateDep) -> AuthThrottle:
    return state.auth_throttle


AuthThrottleDep = Annotated[AuthThrottle, Depends(get_auth_throttle)]


def too_many_attempts(refused: AttemptsRefused) -> HTTPException:
    """429 with ``Retry-After`` in seconds and the wait in words ("15 minutes")."""
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"Too many {refused.what}; try again in {in_words(refused.retry_after_s)}",
        headers={"Retry-After": str(refused.retry_after_s)},
    )


TokenDep = Annotated[str, Depends(oauth2_scheme)]


def credentials_error() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=CREDENTIALS_ERROR, headers=BEARER)


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    """Who is calling, detached from any session."""

    id: int
    email: str
    name: str
    is_admin: bool


async def get_token_user_id(token: TokenDep, state: StateDep) -> int:
    """The user id a valid token names, checked without the database. Alone, only for routes
    whose write proves the account still exists (a foreign key to ``users``; ids are never
    reused) and answers 401 when it does not, as ``POST /model/predict`` does."""
    try:
        return state.tokens.user_id(token)
    except InvalidTokenError:
        raise credentials_error() from None


TokenUserId = Annotated[int, Depends(get_token_user_id)]


def _authenticated_user(session: Session, user_id: int) -> AuthenticatedUser | None:
    user = session.get(User, user_id)  # None: deleted since the token was issued
    return AuthenticatedUser(user.id, user.email, user.name, user.is_admin) if user else None


async def get_current_user(state: StateDep, user_id: TokenUserId) -> AuthenticatedUser:
    """Authenticate in a read-only unit of work of its own, finished before the route runs,
    so no route holds a connection because of who is calling (the model's wait, in
    particular)."""
    reads = UnitsOfWork(state.database, writes=False)
    user = await reads.run(_authenticated_user, user_id)
    if user is None:
        raise credentials_error()
    return user


CurrentUser = Annotated[AuthenticatedUser, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser) -> AuthenticatedUser:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Only administrators may do this")
    return user


AdminUser = Annotated[AuthenticatedUser, Depends(get_admin_user)]


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


async def get_page(
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    # Bounded like ids: a larger offset only overflows the database's integer (a 500).
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Items to skip.")] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(get_page)]


def required_queue(state: AppState) -> JobQueue:
    """The app's queue, or 503 when it was built without one."""
    if state.queue is None:
        raise HTTPException(503, "No model worker is configured for this service.")
    return state.queue


async def get_queue(state: StateDep) -> JobQueue:
    return required_queue(state)


QueueDep = Annotated[JobQueue, Depends(get_queue)]


async def get_owned_job_id(job_id: str, user: CurrentUser, queue: QueueDep) -> str:
    """A job id of the caller's: 404 when unknown (or expired), 403 when another user's."""
    owner = await queue.job_owner(job_id)
    if owner is None:
        # Not named: the id is whatever the client put in the path, up to its length limit.
        raise HTTPException(404, "No such job: it was never queued, or it has expired")
    if owner != user.id:
        raise HTTPException(403, "This job belongs to another user")
    return job_id


OwnedJobId = Annotated[str, Depends(get_owned_job_id)]
