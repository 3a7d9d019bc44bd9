"""``POST /login``: the OAuth2 password form in, a bearer token out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from imgclf.api.auth.schemas import Token
from imgclf.api.auth.service import find_credentials, normalize_email
from imgclf.api.auth.throttle import FailedLoginThrottle
from imgclf.api.deps import DatabaseDep, PasswordHasherDep, SettingsDep
from imgclf.api.errors import error_responses
from imgclf.api.security import create_access_token

router = APIRouter(tags=["auth"])


async def get_login_throttle(request: Request) -> FailedLoginThrottle:
    throttle: FailedLoginThrottle = request.app.state.login_throttle
    return throttle


LoginThrottleDep = Annotated[FailedLoginThrottle, Depends(get_login_throttle)]


@router.post("/login", response_model=Token, responses=error_responses(400, 401, 413, 422, 429))
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    db: DatabaseDep,
    hasher: PasswordHasherDep,
    settings: SettingsDep,
    throttle: LoginThrottleDep,
) -> Token:
    """Exchange an email (the form's ``username``) and password for an access token."""
    email = normalize_email(form.username)
    address = request.client.host if request.client else "unknown"
    retry_after = await throttle.retry_after(email, address)
    if retry_after is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"Too many failed logins; try again in {retry_after} seconds",
            headers={"Retry-After": str(retry_after)},
        )
    # The lookup's connection is released before Argon2 runs; an unknown email is verified
    # against a dummy hash, so it takes as long as a wrong password.
    credentials = await db.run(find_credentials, email)
    if not await hasher.verify(form.password, credentials.password_hash if credentials else None):
        await throttle.record_failure(email, address)
        # One answer for an unknown email and a wrong password: it must not tell them apart.
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect email or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    assert credentials is not None  # verify() never accepts the dummy hash
    return Token(access_token=create_access_token(credentials.user_id, settings))
