"""``POST /login``: the OAuth2 password form in, a bearer token out (and, for the scope
``offline_access``, a refresh token); ``POST /login/refresh`` renews; ``POST /logout`` ends."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from imgclf.api.auth import sessions
from imgclf.api.auth.schemas import RefreshRequest, Token
from imgclf.api.auth.service import find_credentials, normalize_email, renew_password_hash
from imgclf.api.auth.throttle import AttemptsRefused, client_network
from imgclf.api.deps import (
    AuthThrottleDep,
    ClientAddressDep,
    DatabaseDep,
    PasswordHasherDep,
    SettingsDep,
    too_many_attempts,
)
from imgclf.api.errors import error_responses
from imgclf.api.security import PasswordChecksBusy, create_access_token
from imgclf.settings import Settings

logger = logging.getLogger(__name__)
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
        raise too_many_attempts(refused) from None
    try:
        # The lookup's connection is released before Argon2 runs; an unknown email is verified
        # against a dummy hash, so it takes as long as a wrong password.
        credentials = await db.run(find_credentials, email)
        verified, renewed_hash = await hasher.verify_and_renew(
            form.password,
            credentials.password_hash if credentials else None,
            client=client_network(address),  # an IPv6 client is its /64, as in the budgets
            known=attempt.known,
        )
    except PasswordChecksBusy:
        await throttle.busy(attempt)
        raise
    except Exception:
        await throttle.give_back(attempt)  # the database is down: nothing was tried
        raise
    if not verified:
        # One answer for an unknown email and a wrong password: it must not tell them apart.
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect email or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    await throttle.succeeded(attempt, email, address)  # not a failure; still a password check
    assert credentials is not None  # verify_and_renew never accepts the dummy hash
    if renewed_hash is not None:  # made at another cost than the settings' now
        try:
            await db.run(
                renew_password_hash, credentials.user_id, credentials.password_hash, renewed_hash
            )
        except Exception:  # a chance taken, not a condition: the next login tries again
            logger.warning("could not store user %d's renewed password hash", credentials.user_id)
    refresh_token = None
    if sessions.OFFLINE_ACCESS in form.scopes:
        lifetime = timedelta(days=settings.session_days)
        # AccountGoneError (401) if the account was deleted since its password was checked
        refresh_token = await db.run(sessions.start_session, credentials.user_id, lifetime)
    return _access(credentials.user_id, settings, refresh_token)


def _access(user_id: int, settings: Settings, refresh_token: str | None = None) -> Token:
    return Token(
        access_token=create_access_token(user_id, settings),
        expires_in=int(settings.access_token_minutes * 60),
        refresh_token=refresh_token,
        refresh_expires_in=int(settings.session_days * 86400) if refresh_token else None,
    )


@router.post(
    "/login/refresh",
    summary="Renew: a new access token for a refresh token",
    response_model=Token,
    responses=error_responses(400, 401, 422),
)
async def refresh_login(body: RefreshRequest, db: DatabaseDep, settings: SettingsDep) -> Token:
    """A fresh access token while the login's refresh token lives (the refresh token itself
    stays the same)."""
    user_id = await db.run(sessions.session_user, body.refresh_token)
    if user_id is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Your login has ended; log in again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return _access(user_id, settings)


@router.post(
    "/logout",
    summary="Log out: end a refresh token",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 422),
)
async def logout(body: RefreshRequest, db: DatabaseDep) -> Response:
    """The refresh token stops working at once; access tokens already issued run out by
    themselves (minutes)."""
    await db.run(sessions.end_session, body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
