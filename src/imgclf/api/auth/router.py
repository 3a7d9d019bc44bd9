"""``POST /login``: the OAuth2 password form in, a bearer token out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from imgclf.api.auth.schemas import Token
from imgclf.api.auth.service import find_credentials, normalize_email
from imgclf.api.auth.throttle import AttemptsRefused
from imgclf.api.deps import (
    AuthThrottleDep,
    ClientAddressDep,
    DatabaseDep,
    PasswordHasherDep,
    SettingsDep,
    too_many_attempts,
)
from imgclf.api.errors import error_responses
from imgclf.api.security import create_access_token

router = APIRouter(tags=["auth"])


@router.post(
    "/login",
    summary="Log in: an access token for your email and password",
    response_model=Token,
    responses=error_responses(400, 401, 413, 422, 429, 503),
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    address: ClientAddressDep,
    db: DatabaseDep,
    hasher: PasswordHasherDep,
    settings: SettingsDep,
    throttle: AuthThrottleDep,
) -> Token:
    """Exchange an email (the form's ``username``) and password for an access token."""
    email = normalize_email(form.username)
    try:
        # Counted before the password is checked, so guesses sent together cannot all be.
        attempt = await throttle.login(email, address)
    except AttemptsRefused as refused:
        raise too_many_attempts("failed logins", refused) from None
    try:
        # The lookup's connection is released before Argon2 runs; an unknown email is verified
        # against a dummy hash, so it takes as long as a wrong password.
        credentials = await db.run(find_credentials, email)
        verified = await hasher.verify(
            form.password, credentials.password_hash if credentials else None, client=address
        )
    except Exception:
        await throttle.give_back(attempt)  # busy, or the database is down: nothing was tried
        raise
    if not verified:
        # One answer for an unknown email and a wrong password: it must not tell them apart.
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect email or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    await throttle.give_back(attempt)  # successful logins do not count
    assert credentials is not None  # verify() never accepts the dummy hash
    return Token(access_token=create_access_token(credentials.user_id, settings))
