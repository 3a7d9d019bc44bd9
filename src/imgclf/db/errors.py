"""Telling database refusals apart, the same way on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError


def is_foreign_key_violation(error: IntegrityError) -> bool:
    """A row named a parent that is gone (on our tables: a deleted user, or its predictions)."""
    return getattr(error.orig, "sqlstate", None) == "23503" or "FOREIGN KEY" in str(error.orig)
