"""String types for request fields that are stored: PostgreSQL text cannot hold a NUL character."""

from __future__ import annotations

from pydantic import AfterValidator


def refuse_nul(value: str | None) -> str | None:
    # Optional fields reach here with None when a client sends null.
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Put it after a field's length constraints, so their messages stay the usual ones:
# ``Annotated[str, Field(max_length=200), NoNul]``.
NoNul = AfterValidator(refuse_nul)
