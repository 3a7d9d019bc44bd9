"""The user's past predictions and the feedback they gave, newest first."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from imgclf.ui import session
from imgclf.ui.client import ApiClient, ApiError, History
from imgclf.ui.labels import display_name
from imgclf.ui.text import escape_markdown, percent

HISTORY_LIMIT = 50


def when(moment: datetime) -> str:
    """An API timestamp as ``2026-11-26 04:54 UTC`` (the API stores UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(client: ApiClient, token: str) -> None:
    with st.spinner("Loading your history…"):
        history = session.authorized(client.history(token, limit=HISTORY_LIMIT))
    if isinstance(history, ApiError):
        st.error(f"Your history could not be loaded: {history.message}", icon=":material/error:")
        return
    _predictions(history)
    _feedback(history)


def _predictions(history: History) -> None:
    st.subheader("Predictions")
    if not history.predictions:
        st.info("No predictions yet. Classify an image and it will appear here.")
        return
    # Newest first, so for a prediction with several feedbacks the latest one is kept.
    said: dict[int | None, str] = {}
    for item in history.feedback:
        said.setdefault(item.prediction_id, item.feedback)
    # st.table renders Markdown: what users typed is escaped so that it stays plain text.
    rows = [
        {
            "When": when(item.created_at),
            "Class": escape_markdown(display_name(item.label)),
            "Score": percent(item.score),
            "Your feedback": escape_markdown(said.get(item.id, "")),
        }
        for item in history.predictions
    ]
    st.table(rows, border="horizontal", hide_index=True)


def _feedback(history: History) -> None:
    st.subheader("Feedback")
    if not history.feedback:
        st.info("No feedback yet. Tell us whether a prediction was right and it will appear here.")
        return
    rows = [
        {
            "On": escape_markdown(display_name(item.predicted_class)),
            "Score": percent(item.score),
            "Feedback": escape_markdown(item.feedback),
        }
        for item in history.feedback
    ]
    st.table(rows, border="horizontal", hide_index=True)
