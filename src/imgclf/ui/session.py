"""What the UI keeps in ``st.session_state`` (one browser tab's state), in one place.

- ``token``: the API access token; present only while logged in.
- ``user``: the logged-in ``User``.
- ``notice``: a message for the login page (say, why the user was sent back to it).
- ``results``: the latest Classify click's ``ImageResult`` list.
- ``feedback_sent``: prediction id -> the ``Feedback`` the API stored for it.
- widget keys: ``view``, ``uploader``, ``login-*``, ``signup-*``, ``fb-*``.

Logging out clears all of it, so nothing of one user is left for the next on a shared machine.
"""

from __future__ import annotations

from typing import Any, TypeVar

import streamlit as st

from imgclf.ui.client import ApiError, User

TOKEN = "token"  # noqa: S105 - a session_state key, not a secret
USER = "user"
NOTICE = "notice"
RESULTS = "results"
FEEDBACK_SENT = "feedback_sent"

EXPIRED_NOTICE = "Your session has expired. Please log in again."

T = TypeVar("T")


def token() -> str | None:
    value = st.session_state.get(TOKEN)
    return value if isinstance(value, str) else None


def user() -> User | None:
    value = st.session_state.get(USER)
    return value if isinstance(value, User) else None


def log_in(access_token: str, who: User) -> None:
    st.session_state.clear()
    st.session_state[TOKEN] = access_token
    st.session_state[USER] = who


def log_out(notice: str | None = None) -> None:
    st.session_state.clear()
    if notice:
        st.session_state[NOTICE] = notice


def pop_notice() -> str | None:
    value: Any = st.session_state.pop(NOTICE, None)
    return str(value) if value else None


def authorized(result: T | ApiError) -> T | ApiError:
    """``result`` itself, unless the API said the token is no longer valid: then back to the
    login page with a notice (``st.rerun`` ends this script run)."""
    if isinstance(result, ApiError) and result.unauthorized:
        log_out(EXPIRED_NOTICE)
        st.rerun()
    return result
