"""``/user/``: sign up, read yourself, and (admins) list, read or delete anyone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy.orm import Session

from imgclf.api.auth.throttle import AttemptsRefused, client_network
from imgclf.api.deps import (
    AdminUser,
    AuthenticatedUser,
    AuthThrottleDep,
    ClientAddressDep,
    CurrentUser,
    DatabaseDep,
    PageDep,
    PasswordHasherDep,
    StateDep,
    id_path,
    too_many_attempts,
)
from imgclf.api.errors import error_responses
from imgclf.api.security import PasswordChecksBusy
from imgclf.api.users import service
from imgclf.api.users.schemas import UserCreate, UserMe, UserPublic
from imgclf.db.models import User

router = APIRouter(prefix="/user", tags=["users"])
UserIdPath = Annotated[int, id_path("A user's id.")]


def _target_user(session: Session, user_id: int, caller: AuthenticatedUser) -> User:
    """The user a path names: 404 when missing, 403 when it is neither the caller nor an admin."""
    user = service.get_user(session, user_id)
    if user is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"User with the id {user_id} is not available"
        )
    if user.id != caller.id and not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="You may only act on your own user")
    return user


def _delete_target_user(
    session: Session, user_id: int, caller: AuthenticatedUser, upload_dir: Path
) -> None:
    service.delete_user(session, _target_user(session, user_id, caller), upload_dir)


@router.post(
    "/",
    summary="Sign up",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 413, 422, 429, 503),
)
async def create_user(
    body: UserCreate,
    address: ClientAddressDep,
    db: DatabaseDep,
    hasher: PasswordHasherDep,
    throttle: AuthThrottleDep,
) -> User:
    """Sign up. No authentication; the new user is never an admin."""
    # The contract answers 400 for an email that has an account, which tells whoever asks that
    # it exists: each address gets a few sign-ups per window, so it cannot list who has one.
    try:
        attempt = await throttle.sign_up(address)
    except AttemptsRefused as refused:
        raise too_many_attempts(refused) from None
    if await db.run(service.email_exists, body.email):
        raise service.EmailTaken(body.email)
    # Hashed outside any transaction: the insert then holds its lock for a moment only.
    try:
        password_hash = await hasher.hash(body.password, client=client_network(address))
    except PasswordChecksBusy:
        await throttle.give_back(attempt)  # nothing was created or told
        raise
    return await db.run(
        service.create_user, name=body.name, email=body.email, password_hash=password_hash
    )


@router.get("/me", summary="Your account", response_model=UserMe, responses=error_responses(401))
async def read_me(user: CurrentUser) -> AuthenticatedUser:
    """The user the token belongs to."""
    return user


@router.get(
    "/",
    summary="Every account (admins)",
    response_model=list[UserPublic],
    responses=error_responses(401, 403, 422),
)
async def read_users(_admin: AdminUser, db: DatabaseDep, page: PageDep) -> list[User]:
    """Every user, by id (admins only)."""
    return await db.run(service.read_users, limit=page.limit, offset=page.offset)


@router.get(
    "/{user_id}",
    summary="One account",
    response_model=UserPublic,
    responses=error_responses(401, 403, 404, 422),
)
async def read_user(user_id: UserIdPath, caller: CurrentUser, db: DatabaseDep) -> User:
    """One user: yourself, or anyone if you are an admin."""
    return await db.run(_target_user, user_id, caller)


@router.delete(
    "/{user_id}",
    summary="Delete an account and everything it owns",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_user(
    user_id: UserIdPath, caller: CurrentUser, db: DatabaseDep, state: StateDep
) -> None:
    """Delete yourself (or anyone, as an admin), with your predictions, your feedback and the
    images no one else has recorded."""
    await db.run(_delete_target_user, user_id, caller, state.settings.upload_dir)
    state.tokens.forget_user(user_id)
