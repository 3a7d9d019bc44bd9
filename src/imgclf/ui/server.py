"""The UI server: the Streamlit page (``app.py``) and, beside it, the two routes that set and
clear the login cookie (``imgclf.ui.login_cookie``). ``imgclf ui`` runs this file."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from imgclf.ui.login_cookie import ROUTES

app = st.App(Path(__file__).with_name("app.py"), routes=ROUTES)
