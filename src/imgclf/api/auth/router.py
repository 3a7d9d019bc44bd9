"""``POST /login``: the OAuth2 password form in, a bearer token out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from imgclf.api.auth.schemas import Token
from imgclf.api.auth.service import authenticate, normalize_email
from imgclf.api.auth.throttle import LoginThrottle
from imgclf.api.deps import SessionDep, SettingsDep
from imgclf.api.errors import error_responses
from imgclf.api.security import create_access_token

router = APIRouter(tags=["auth"])


def get_login_throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.app.state.login_throttle
    return throttle


LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]


@router.post("/login", response_model=Token, responses=error_responses(400, 401, 413, 422, 429))
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    throttle: LoginThrottleDep,
) -> Token:
    """Exchange an email (the form's ``username``) and password for an access token."""
    email = normalize_email(form.username)
    address = request.client.host if request.client else "unknown"
    retry_after = throttle.retry_after(email, address)
    if retry_after is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"Too many failed logins; try again in {retry_after} seconds",
            headers={"Retry-After": str(retry_after)},
        )
    user = authenticate(session, email, form.password)
    if user is None:
        throttle.record_failure(email, address)
        # One answer for an unknown email and a wrong password: it must not tell them apart.
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect email or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Token(access_token=create_access_token(user.id, settings))
