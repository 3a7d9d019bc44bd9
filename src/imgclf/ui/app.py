"""The imgclf page: ``streamlit run`` this file (``imgclf ui`` does), with ``IMGCLF_API_URL``.

It talks to the API only over HTTP. The URL comes straight from the environment rather than
from ``imgclf.settings``: the UI needs no secret, and production settings refuse to load
without one.
"""

from __future__ import annotations

import os

import streamlit as st

from imgclf.ui import admin_view, back_button, classify_view, history_view, login_view, session
from imgclf.ui.client import ApiClient
from imgclf.ui.text import escape_markdown

DEFAULT_API_URL = "http://127.0.0.1:8000"
CLASSIFY, HISTORY, ADMIN = "Classify", "History", "Admin"
VIEW = "view"  # the tabs' key, and the address's parameter naming the open one


@st.cache_resource
def api_client(base_url: str) -> ApiClient:
    """One client (one connection pool) per API URL, shared by every browser tab."""
    return ApiClient(base_url)


def api_url() -> str:
    return os.environ.get("IMGCLF_API_URL", "").strip() or DEFAULT_API_URL


def header(client: ApiClient) -> None:
    who = session.user()
    title, account = st.columns([3, 2], vertical_alignment="bottom")
    with title:
        st.title(":material/image_search: imgclf")
        st.caption("Upload a photo, learn what is in it, tell us whether we were right.")
    if who is None:
        return
    with account.container(
        horizontal=True, horizontal_alignment="right", vertical_alignment="center"
    ):
        st.markdown(f"Signed in as **{escape_markdown(who.name)}**", width="content")
        st.button("Log out", icon=":material/logout:", on_click=session.log_out, args=(client,))


def _open_the_addressed_tab(names: list[str]) -> None:
    """A reload opens the tab that was open: the address names it (``?view=History``, set by
    ``imgclf.ui.back_button`` as tabs are opened); a reload went back to Classify."""
    asked = st.query_params.get(VIEW)
    if VIEW not in st.session_state and asked in names:
        st.session_state[VIEW] = asked


def main() -> None:
    st.set_page_config(page_title="imgclf", page_icon="🔎", layout="centered")
    client = api_client(api_url())
    session.resume(client)
    session.mark_upload_rights()
    session.browser_cookie_chores()
    header(client)
    if session.token() is None:
        login_view.render(client)
        session.mark_upload_rights()  # logged in by this run's form, if it was
        back_button.follow_tabs_in_history()  # last: its element's gap is below everything
        return
    session.keep_history_drafts()
    # The Classify tab always runs, so its uploads and answers survive a look at History;
    # History and Admin ask the API only while open. Admin is there for admins only.
    names = [CLASSIFY, HISTORY, ADMIN] if session.is_admin() else [CLASSIFY, HISTORY]
    _open_the_addressed_tab(names)
    classify_tab, history_tab, *admin_tab = st.tabs(names, key=VIEW, on_change="rerun")
    with classify_tab:
        classify_view.render(client)
    with history_tab:
        if history_tab.open:
            history_view.render(client)
    for tab in admin_tab:
        with tab:
            if tab.open:
                admin_view.render(client)
    session.shelve()
    back_button.follow_tabs_in_history()


main()
