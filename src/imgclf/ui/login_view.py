"""The page a visitor sees first: log in, or create an account."""

from __future__ import annotations

import streamlit as st

from imgclf.ui import session
from imgclf.ui.client import ApiClient, ApiError

MIN_PASSWORD = 8


def render(client: ApiClient) -> None:
    notice = session.pop_notice()
    if notice:
        st.info(notice, icon=":material/lock_clock:")
    log_in_tab, sign_up_tab = st.tabs(["Log in", "Sign up"])
    with log_in_tab:
        _log_in_form(client)
    with sign_up_tab:
        _sign_up_form(client)
    st.caption(f"API: {client.base_url}")


def _log_in_form(client: ApiClient) -> None:
    with st.form("login", border=True):
        email = st.text_input("Email", key="login-email", type="email", autocomplete="username")
        password = st.text_input(
            "Password", type="password", key="login-password", autocomplete="current-password"
        )
        submitted = st.form_submit_button("Log in", type="primary", width="stretch")
    if not submitted:
        return
    if not email.strip() or not password:
        st.error("Enter your email and your password.")
        return
    _enter(client, email.strip(), password)


def _sign_up_form(client: ApiClient) -> None:
    with st.form("signup", border=True):
        name = st.text_input("Name", key="signup-name", max_chars=50)
        email = st.text_input("Email", key="signup-email", type="email", autocomplete="email")
        password = st.text_input(
            "Password",
            type="password",
            key="signup-password",
            autocomplete="new-password",
            help=f"At least {MIN_PASSWORD} characters.",
        )
        submitted = st.form_submit_button("Create account", type="primary", width="stretch")
    if not submitted:
        return
    # The API checks these too; saying so here spares a round trip and reads better.
    if len(name.strip()) < 2:
        st.error("Enter your name (at least 2 characters).")
        return
    if "@" not in email:
        st.error("Enter a valid email address.")
        return
    if len(password) < MIN_PASSWORD:
        st.error(f"Choose a password of at least {MIN_PASSWORD} characters.")
        return
    created = client.sign_up(name.strip(), email.strip(), password, _visitor_address())
    if isinstance(created, ApiError):
        st.error(created.message)
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
        access_token = client.login(email, password, _visitor_address())
        who = client.me(access_token) if isinstance(access_token, str) else access_token
    if isinstance(who, ApiError):
        st.error(who.message, icon=":material/error:")
        return
    assert isinstance(access_token, str)
    session.log_in(access_token, who)
    st.rerun()
