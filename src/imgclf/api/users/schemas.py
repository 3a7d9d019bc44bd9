"""What the users routes accept and return; never a password or its hash."""

from __future__ import annotations

from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from imgclf.api.text import NoNul, VisibleName

Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=2, max_length=50), NoNul, VisibleName
]


def _reachable_domain(email: str) -> str:
    """Every top-level domain has two letters or more: ``ann@example.c`` is a typo that
    email-validator lets through (without a DNS lookup it checks the syntax alone)."""
    if len(email.rpartition(".")[2]) < 2:
        raise ValueError("the email's domain must end in a top-level domain such as .com or .de")
    return email


def _plain_form(email: str) -> str:
    """The email as one account: ASCII before the @ (admin@… with a fullwidth or a Cyrillic
    first letter signed up as a second "admin" that reads the same in every list),
    the domain in its ASCII form (bücher.de as xn--bcher-kva.de, so a look-alike domain
    shows), and lower-cased (Bob@Example.com and bob@example.com are one account)."""
    try:
        plain = validate_email(email, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise ValueError(f"the email is not accepted: {error}") from None
    return f"{plain.local_part}@{plain.ascii_domain}".lower()


Email = Annotated[EmailStr, AfterValidator(_reachable_domain), AfterValidator(_plain_form)]


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
