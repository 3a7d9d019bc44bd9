"""What logging in and renewing return."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int | None = Field(default=None, description="Seconds the access token lives.")
    refresh_token: str | None = Field(
        default=None,
        description="Only when the scope `offline_access` was asked for: renews the access "
        "token at `POST /login/refresh` until it expires or `POST /logout` ends it.",
    )
    refresh_expires_in: int | None = Field(
        default=None, description="Seconds the refresh token lives, when there is one."
    )


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=128)
