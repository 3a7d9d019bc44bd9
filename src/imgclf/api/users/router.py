"""``/user/``: sign up, read yourself, and (admins) list, read or delete anyone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status

from imgclf.api.deps import AdminUser, CurrentUser, PageDep, SessionDep, id_path
from imgclf.api.errors import error_responses
from imgclf.api.security import hash_password
from imgclf.api.users import service
from imgclf.api.users.schemas import UserCreate, UserPublic
from imgclf.db.models import User

router = APIRouter(prefix="/user", tags=["users"])


UserIdPath = Annotated[int, id_path("A user's id.")]


def get_target_user(user_id: UserIdPath, caller: CurrentUser, session: SessionDep) -> User:
    """The user a path names: 404 when missing, 403 when it is neither the caller nor an admin."""
    user = service.get_user(session, user_id)
    if user is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"User with the id {user_id} is not available"
        )
    if user.id != caller.id and not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="You may only act on your own user")
    return user


TargetUser = Annotated[User, Depends(get_target_user)]


def _email_taken() -> HTTPException:
    return HTTPException(
        status.HTTP_400_BAD_REQUEST, detail="The user with this email already exists"
    )


@router.post(
    "/",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 413, 422),
)
def create_user(body: UserCreate, session: SessionDep) -> User:
    """Sign up. No authentication; the new user is never an admin."""
    if service.email_exists(session, body.email):
        raise _email_taken()
    try:
        return service.create_user(
            session, name=body.name, email=body.email, password_hash=hash_password(body.password)
        )
    except service.EmailTaken:
        raise _email_taken() from None


@router.get("/me", response_model=UserPublic, responses=error_responses(401))
def read_me(user: CurrentUser) -> User:
    """The user the token belongs to."""
    return user


@router.get("/", response_model=list[UserPublic], responses=error_responses(401, 403, 422))
def read_users(_admin: AdminUser, session: SessionDep, page: PageDep) -> list[User]:
    """Every user, by id (admins only)."""
    return list(service.read_users(session, limit=page.limit, offset=page.offset))


@router.get("/{user_id}", response_model=UserPublic, responses=error_responses(401, 403, 404, 422))
def read_user(user: TargetUser) -> User:
    """One user: yourself, or anyone if you are an admin."""
    return user


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
def delete_user(user: TargetUser, session: SessionDep) -> None:
    """Delete yourself (or anyone, as an admin), with your predictions and feedback."""
    service.delete_user(session, user)
