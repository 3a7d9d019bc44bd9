"""The UI server: the Streamlit page (``app.py``) and, beside it, the two routes that set and
clear the login cookie (``imgclf.ui.login_cookie``), and the guard in front of Streamlit's
upload route (``imgclf.ui.upload_guard``). ``imgclf ui`` runs this file."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from imgclf.ui.login_cookie import ROUTES
from imgclf.ui.upload_guard import UploadGuard

app = st.App(
    Path(__file__).with_name("app.py"), routes=ROUTES, middleware=[Middleware(UploadGuard)]
)
