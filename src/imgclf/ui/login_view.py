"""The page a visitor sees first: log in, or create an account."""

from __future__ import annotations

import re

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from imgclf.ui import session
from imgclf.ui.client import ApiClient, ApiError

MIN_NAME, MIN_PASSWORD = 2, 8
# Checked on submit, with a message: a field's own max_chars threw away a longer name pasted
# into it, and then asked for "at least 2 characters".
MAX_NAME = 50
# The API's words for a duplicate email (its contract), and what a person is told to do.
EMAIL_TAKEN = "The user with this email already exists"
EMAIL_TAKEN_HINT = "An account with this email already exists; log in instead."
# The API checks emails properly; this catches what a person mistypes, before a round trip
# (with the API: a top-level domain has two letters or more, so ann@example.c is a typo).
EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")


def render(client: ApiClient) -> None:
    notice = session.pop_notice()
    if notice:
        st.info(notice, icon=":material/lock_clock:")
    log_in_tab, sign_up_tab = st.tabs(["Log in", "Sign up"])
    with log_in_tab:
        _log_in_form(client)
    with sign_up_tab:
        _sign_up_form(client)


def _say(place: DeltaGenerator, message: str) -> None:
    """A message under the field it is about, in words, not only a red border."""
    place.error(message, icon=":material/error:")


def _log_in_form(client: ApiClient) -> None:
    with st.form("login", border=True):
        # Plain text fields: a browser's own email check would block the button silently.
        email = st.text_input("Email", key="login-email", autocomplete="username")
        email_note = st.empty()
        password = st.text_input(
            "Password", type="password", key="login-password", autocomplete="current-password"
        )
        password_note = st.empty()
        submitted = st.form_submit_button("Log in", type="primary", width="stretch")
    if not submitted:
        return
    if not email.strip():
        _say(email_note, "Enter your email.")
    if not password:
        _say(password_note, "Enter your password.")
    if email.strip() and password:
        _enter(client, email.strip(), password)


def _sign_up_form(client: ApiClient) -> None:
    with st.form("signup", border=True):
        name = st.text_input("Name", key="signup-name")
        name_note = st.empty()
        email = st.text_input("Email", key="signup-email", autocomplete="email")
        email_note = st.empty()
        password = st.text_input(
            "Password",
            type="password",
            key="signup-password",
            autocomplete="new-password",
            placeholder=f"At least {MIN_PASSWORD} characters",
        )
        password_note = st.empty()
        submitted = st.form_submit_button("Create account", type="primary", width="stretch")
    if not submitted:
        return
    valid = True
    if len(name.strip()) < MIN_NAME:
        _say(name_note, f"Enter your name (at least {MIN_NAME} characters).")
        valid = False
    elif len(name.strip()) > MAX_NAME:
        _say(name_note, f"Your name is {len(name.strip())} characters; at most {MAX_NAME} fit.")
        valid = False
    if not EMAIL_SHAPE.match(email.strip()):
        _say(email_note, "Enter a valid email address, like name@example.com.")
        valid = False
    if len(password) < MIN_PASSWORD:
        _say(password_note, f"Choose a password of at least {MIN_PASSWORD} characters.")
        valid = False
    if not valid:
        return
    created = client.sign_up(name.strip(), email.strip(), password, _visitor_address())
    if isinstance(created, ApiError):
        taken = created.status == 400 and created.message == EMAIL_TAKEN
        st.error(EMAIL_TAKEN_HINT if taken else created.message, icon=":material/error:")
        return
    _enter(client, email.strip(), password)


def _visitor_address() -> str | None:
    """The browser's address, so one visitor's failures spend only that visitor's login budget.
    None from this machine (the API then counts the UI's own address), and in Streamlit's
    AppTest, which has no connection."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None


def _enter(client: ApiClient, email: str, password: str) -> None:
    """Log in and go to the main page, or say why not."""
    with st.spinner("Logging in…"):
        access = client.start_session(email, password, _visitor_address())
        who = client.me(access.access_token) if not isinstance(access, ApiError) else access
    if isinstance(who, ApiError):
        st.error(who.message, icon=":material/error:")
        return
    assert not isinstance(access, ApiError)
    session.log_in(access, who)
    st.rerun()
