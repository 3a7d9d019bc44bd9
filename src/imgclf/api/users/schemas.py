"""What the users routes accept and return; never a password or its hash."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from imgclf.api.text import NoNul, VisibleName

Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=2, max_length=50), NoNul, VisibleName
]
# Emails are compared lower-cased: Bob@Example.com and bob@example.com are one account.
Email = Annotated[EmailStr, AfterValidator(lambda email: email.lower())]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    email: Email
    password: Annotated[str, Field(min_length=8, max_length=128)]


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str


class UserMe(UserPublic):
    """Your own account, with what you may do: the UI shows its admin page to admins only."""

    is_admin: bool
