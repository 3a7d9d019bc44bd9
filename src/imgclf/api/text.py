"""String types for request fields that are stored: PostgreSQL text cannot hold a NUL character."""

from __future__ import annotations

import unicodedata

from pydantic import AfterValidator


def refuse_nul(value: str | None) -> str | None:
    # Optional fields reach here with None when a client sends null.
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Put it after a field's length constraints, so their messages stay the usual ones:
# ``Annotated[str, Field(max_length=200), NoNul]``.
NoNul = AfterValidator(refuse_nul)


# Embeddings, overrides and isolates: a name holding one reverses the text shown after it.
_DIRECTION_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def refuse_invisible_name(value: str) -> str:
    """A name people can read: no control characters or text-direction overrides, and at
    least two characters that show (zero-width ones, which some scripts need between
    letters, are allowed, but a name of them alone shows as nothing)."""
    if any(unicodedata.category(c) == "Cc" or c in _DIRECTION_CONTROLS for c in value):
        raise ValueError("must not contain control characters or text-direction overrides")
    if sum(1 for c in value if c.isprintable() and not c.isspace()) < 2:
        raise ValueError("must have at least 2 visible characters")
    return value


VisibleName = AfterValidator(refuse_invisible_name)
