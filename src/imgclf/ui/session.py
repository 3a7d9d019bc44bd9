"""What the UI keeps in ``st.session_state`` (one browser tab's state), in one place.

- ``token``, ``token_renew_at``: the API access token, and when to renew it (before it expires).
- ``refresh_token``: renews the access token; the browser keeps a copy in an HttpOnly cookie,
  so a reload or a new tab finds the login (``imgclf.ui.login_cookie``).
- ``user``: the logged-in ``User`` (a ``Me``, which says whether they are an admin, once
  ``/user/me`` has answered).
- ``model-choice``: the model the Classify tab asks (the picker's widget key).
- ``notice``: a message for the login page (say, why the user was sent back to it).
- ``images``: content hash -> ``ImageResult``, the images on the Classify tab and their answers.
- ``feedback_sent``: prediction id -> the ``Feedback`` the API stored for it.
- ``kept_work``: what a user had not sent when the login ended, restored when they log in again.
- ``generation``: the user's logout generation this tab began in (``imgclf.ui.shelf``): when it
  changes, they logged out in another tab, and this one follows.
- widget keys: ``view``, ``uploader-*``, ``login-*``, ``signup-*``, ``fb-*``, ``history-*``.

Logging out clears all of it, so nothing of one user is left for the next on a shared machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from imgclf.ui import login_cookie
from imgclf.ui.client import ApiClient, ApiError, Me, Token, User
from imgclf.ui.shelf import SHELF
from imgclf.ui.upload_guard import LOGGED_IN

TOKEN = "token"  # noqa: S105 - a session_state key, not a secret
RENEW_AT = "token_renew_at"
REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a session_state key
USER = "user"
NOTICE = "notice"
IMAGES = "images"
FEEDBACK_SENT = "feedback_sent"
KEPT_WORK = "kept_work"
GENERATION = "generation"
MODEL_CHOICE = "model-choice"  # the model picker's widget key
COOKIE_CODE = "cookie_code"
FORGET_COOKIE = "forget_cookie"
# Feedback forms whose Send was pressed when the login had ended: sent after the next log-in.
PENDING_SENDS = "pending_sends"

EXPIRED_NOTICE = "Your session has expired. Please log in again."
KEPT_NOTICE = "Your session has expired. Log in again: your images and unsent feedback are kept."
LOGGED_OUT_NOTICE = "You logged out in another tab or window."
LOGGED_OUT_KEPT_NOTICE = (
    "You logged out in another tab or window. Log in again here: this tab's images and unsent "
    "feedback are kept."
)
# Renew this long before the access token expires, so a click never meets an expired one.
RENEW_MARGIN_S = 30.0
# What is kept when a login ends: the images and answers, what was sent, and the forms' state.
_WORK_KEYS = (IMAGES, FEEDBACK_SENT)
_FORM_PREFIXES = ("fb-", "fbh-")

T = TypeVar("T")


@dataclass
class KeptWork:
    owner: int
    state: dict[str, Any] = field(default_factory=dict)
    sends: set[int] = field(default_factory=set)


def token() -> str | None:
    value = st.session_state.get(TOKEN)
    return value if isinstance(value, str) else None


def user() -> User | None:
    value = st.session_state.get(USER)
    return value if isinstance(value, User) else None


def is_admin() -> bool:
    """What ``/user/me`` said; the admin routes refuse anyone else whatever the page shows."""
    who = user()
    return isinstance(who, Me) and who.is_admin


def _set_access(access: Token) -> None:
    st.session_state[TOKEN] = access.access_token
    lifetime = access.expires_in or 60
    st.session_state[RENEW_AT] = time.time() + max(lifetime - RENEW_MARGIN_S, lifetime / 2)


def log_in(access: Token, who: User) -> None:
    """Start the tab's session; the work kept from this user's last one comes back."""
    kept = st.session_state.get(KEPT_WORK)
    st.session_state.clear()
    _set_access(access)
    st.session_state[USER] = who
    if access.refresh_token:
        st.session_state[REFRESH_TOKEN] = access.refresh_token
        code = login_cookie.HANDOFF.put(access.refresh_token, access.refresh_expires_in)
        st.session_state[COOKIE_CODE] = code
    _restore_images(who)
    if isinstance(kept, KeptWork) and kept.owner == who.id:
        st.session_state.update(kept.state)
        st.session_state[PENDING_SENDS] = kept.sends


def _restore_images(who: User) -> None:
    """The images and answers this user had in another tab, or before a reload."""
    st.session_state[GENERATION] = SHELF.generation(who.id)
    shelved = SHELF.get(who.id)
    if shelved is not None:
        st.session_state[IMAGES] = shelved.images
        st.session_state[FEEDBACK_SENT] = shelved.feedback_sent
        st.session_state.update(shelved.drafts)
        if shelved.model:  # the picker checks it against the models there are now
            st.session_state[MODEL_CHOICE] = shelved.model


def shelve() -> None:
    """Keep this tab's images, answers, model choice and unsent feedback for the user's other
    tabs and reloads."""
    who = user()
    if who is not None and token() is not None:
        SHELF.put(
            who.id,
            st.session_state.get(GENERATION, 0),
            st.session_state.get(IMAGES, {}),
            st.session_state.get(FEEDBACK_SENT, {}),
            st.session_state.get(MODEL_CHOICE),
            _unsent_drafts(),
        )


def _unsent_drafts() -> dict[str, Any]:
    """The Classify tab's feedback forms not yet sent, for the images still on it. Not
    History's: they start from what was said, which another tab may have changed since."""
    sent = st.session_state.get(FEEDBACK_SENT, {})
    on_tab = {
        getattr(result.outcome, "prediction_id", None)
        for result in st.session_state.get(IMAGES, {}).values()
    }
    return {
        key: value
        for key, value in _form_fields().items()
        if key.startswith("fb-") and _prediction_of(key) in on_tab - set(sent)
    }


def keep_history_drafts() -> None:
    """Keep History's unsent forms while they are not drawn (another row's form is shown, or
    another tab is open): Streamlit forgets a widget's value after a run that does not draw
    it, so a note typed for one prediction was gone on coming back to it. A value set again
    before its widget is drawn stays; the form then starts from it (``feedback_form``)."""
    for key, value in _form_fields().items():
        if key.startswith("fbh-"):
            st.session_state[key] = value


def _prediction_of(key: str) -> int | None:
    """The prediction a form's widget key is about: ``fb-<id>-<field>``, ``fbh-<id>-<field>``."""
    number = key.split("-")[1] if key.count("-") >= 2 else ""
    return int(number) if number.isdigit() else None


def _form_fields() -> dict[str, Any]:
    """The feedback forms' fields as they stand (their Send buttons left out)."""
    return {
        str(key): value
        for key, value in st.session_state.items()
        if str(key).startswith(_FORM_PREFIXES) and not str(key).endswith("-send")
    }


def log_out(client: ApiClient, notice: str | None = None) -> None:
    """End the session here, at the API and in the browser's cookie."""
    refresh_token = st.session_state.get(REFRESH_TOKEN)
    if isinstance(refresh_token, str):
        client.end_session(refresh_token)
    who = user()
    if who is not None:
        SHELF.drop(who.id)
    st.session_state.clear()
    st.session_state[FORGET_COOKIE] = True
    if notice:
        st.session_state[NOTICE] = notice


def expire(notices: tuple[str, str] = (KEPT_NOTICE, EXPIRED_NOTICE)) -> None:
    """The login ended (by itself, or by a logout in another tab): back to the login page,
    keeping this tab's work for its user's next log-in here (``notices``: what the page says
    with work kept, and without)."""
    who = user()
    kept = KeptWork(owner=who.id if who else 0)
    kept.state = {key: st.session_state[key] for key in _WORK_KEYS if key in st.session_state}
    kept.state.update(_form_fields())
    pressed = [  # Send pressed in this run
        str(key)
        for key, value in st.session_state.items()
        if str(key).startswith(_FORM_PREFIXES) and str(key).endswith("-send") and value is True
    ]
    kept.sends = {p for p in map(_prediction_of, pressed) if p is not None}
    st.session_state.clear()
    st.session_state[KEPT_WORK] = kept
    st.session_state[FORGET_COOKIE] = True
    with_work, without = notices
    st.session_state[NOTICE] = with_work if any(kept.state.values()) or kept.sends else without


def renew(client: ApiClient, refresh_token: str | None = None) -> bool | None:
    """A fresh access token from the refresh token (this tab's, or the cookie's): True when
    renewed, False when the login has ended, None when the API did not answer (a brief outage
    does not log anyone out)."""
    refresh_token = refresh_token or st.session_state.get(REFRESH_TOKEN)
    if not isinstance(refresh_token, str):
        return False
    access = client.renew(refresh_token)
    if isinstance(access, ApiError):
        return False if access.unauthorized else None
    _set_access(access)
    st.session_state[REFRESH_TOKEN] = refresh_token
    return True


def resume(client: ApiClient) -> None:
    """At the start of each run: renew an access token about to expire, or find the login the
    browser kept; when the login has ended, go back to the login page keeping the work."""
    if token() is None:
        saved = login_cookie.saved_refresh_token()
        if saved and not st.session_state.get(FORGET_COOKIE) and renew(client, saved) is True:
            who = authorized(client, client.me)
            if isinstance(who, User):
                st.session_state[USER] = who
                _restore_images(who)
                return
        for key in (TOKEN, REFRESH_TOKEN):
            st.session_state.pop(key, None)
        if saved:  # ended elsewhere (a logout in another tab, or its time ran out)
            st.session_state[FORGET_COOKIE] = True
        return
    current = user()
    if current is not None and _logged_out_elsewhere(current):
        expire(notices=(LOGGED_OUT_KEPT_NOTICE, LOGGED_OUT_NOTICE))
        return
    if time.time() >= st.session_state.get(RENEW_AT, 0) and renew(client) is False:
        expire()


def _logged_out_elsewhere(who: User) -> bool:
    """Whether the user logged out in another tab since this one began (a tab that has not
    recorded its generation yet takes the current one)."""
    began = st.session_state.setdefault(GENERATION, SHELF.generation(who.id))
    return bool(began != SHELF.generation(who.id))


def authorized(client: ApiClient, request: Callable[[str], T | ApiError]) -> T | ApiError:
    """``request(access_token)``; if the token is refused, renewed once and asked again. When
    the login has ended, back to the login page with the work kept (``st.rerun`` ends this
    script run)."""
    access = token()
    result = request(access) if access else ApiError("Not logged in", 401)
    if isinstance(result, ApiError) and result.unauthorized and renew(client) is True:
        access = token()
        assert access is not None
        result = request(access)
    if isinstance(result, ApiError) and result.unauthorized:
        expire()
        st.rerun()
    return result


def mark_upload_rights() -> None:
    """Tell the UI server's upload guard whether this page has a login now: only a logged-in
    page may send it files (``imgclf.ui.upload_guard``)."""
    context = get_script_run_ctx()
    if context is not None:
        LOGGED_IN.mark(context.session_id, token() is not None)


def take_pending_send(prediction_id: int) -> bool:
    """Whether Send was pressed on this form when the last login ended (once)."""
    pending: set[int] = st.session_state.get(PENDING_SENDS, set())
    if prediction_id in pending:
        pending.discard(prediction_id)
        return True
    return False


def pop_notice() -> str | None:
    value: Any = st.session_state.pop(NOTICE, None)
    return str(value) if value else None


def browser_cookie_chores() -> None:
    """Hand a new refresh token to the browser's cookie, or have it forget an ended one."""
    code = st.session_state.get(COOKIE_CODE)
    if isinstance(code, str):
        login_cookie.keep_in_browser(code)
    elif st.session_state.get(FORGET_COOKIE) and login_cookie.saved_refresh_token():
        login_cookie.forget_in_browser()
