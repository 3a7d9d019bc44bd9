"""The user's past predictions in one table, a page at a time: each image's thumbnail and file
name, when (in the browser's time zone), the answer and the latest feedback; pick a row to
give or change its feedback."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import streamlit as st

from imgclf.ui import session
from imgclf.ui.client import ApiClient, ApiError, HistoryItem, HistoryPage
from imgclf.ui.feedback_form import Rated, feedback_in_words, note_of, render_feedback_form
from imgclf.ui.labels import display_name
from imgclf.ui.preview import make_preview
from imgclf.ui.result_view import SURE_ENOUGH
from imgclf.ui.scroll import bring_into_view
from imgclf.ui.text import escape_markdown, percent

PAGE_SIZE = 10
PAGE = "history-page"
THUMBNAILS = "history-thumbnails"
THUMBNAIL_SIDE = 96
SAVED = "history-saved"  # what the last feedback sent from History was about
SHOWN = "history-shown"  # the prediction whose form was shown last, to bring a new one into view


def local_zone() -> tzinfo:
    """The browser's time zone, UTC when it does not say."""
    name = st.context.timezone
    try:
        return ZoneInfo(name) if isinstance(name, str) and name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def when(moment: datetime, zone: tzinfo) -> str:
    """An API timestamp (UTC) in ``zone``: ``2026-11-26 05:54``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _thumbnail(client: ApiClient, prediction_id: int) -> str | None:
    """A small picture of the prediction's image as a data URL, made once per tab."""
    made: dict[int, str | None] = st.session_state.setdefault(THUMBNAILS, {})
    if prediction_id not in made:
        data = session.authorized(client, lambda t: client.prediction_image(t, prediction_id))
        picture = None if isinstance(data, ApiError) else make_preview(data, THUMBNAIL_SIDE).picture
        if picture is None:
            made[prediction_id] = None
        else:
            kind = "png" if picture.startswith(b"\x89PNG") else "jpeg"
            made[prediction_id] = (
                f"data:image/{kind};base64,{base64.b64encode(picture).decode('ascii')}"
            )
    return made[prediction_id]


def _answer(item: HistoryItem) -> str:
    """The class, or "Maybe …" when the model was not sure (as the Classify tab says)."""
    name = display_name(item.label)
    return name if item.score >= SURE_ENOUGH else f"Maybe {name}"


def _verdict(item: HistoryItem) -> str:
    """What the user said of the answer, in a mark narrow enough for a phone's width."""
    if item.feedback is None:
        return ""
    if item.feedback.correct is None:
        return "✎"  # a note without a verdict
    return "✓" if item.feedback.correct else "✗"


def _said(item: HistoryItem) -> str:
    """What the user added to the mark under "You": the class they named, and their note."""
    if item.feedback is None:
        return ""
    named = item.feedback.correct_class
    note = note_of(item.feedback.feedback)
    return " ".join(part for part in (f"→ {display_name(named)}." if named else "", note) if part)


def _turn(step: int) -> None:
    st.session_state[PAGE] = max(1, st.session_state.get(PAGE, 1) + step)


def render(client: ApiClient) -> None:
    page_number = max(1, int(st.session_state.get(PAGE, 1)))
    with st.spinner("Loading your history…"):
        page = session.authorized(
            client, lambda t: client.history_page(t, PAGE_SIZE, (page_number - 1) * PAGE_SIZE)
        )
    if isinstance(page, ApiError):
        st.error(f"Your history could not be loaded: {page.message}", icon=":material/error:")
        return
    saved = st.session_state.pop(SAVED, None)
    if saved:
        st.success(escape_markdown(saved), icon=":material/check_circle:")
    if page.total == 0:
        st.info("No predictions yet. Classify an image and it will appear here.")
        return
    pages = max(1, -(-page.total // PAGE_SIZE))
    if page_number > pages:  # the history shrank (another tab, a deleted account's rows)
        st.session_state[PAGE] = pages
        st.rerun()
    chosen = _table(client, page, page_number)
    _pager(page_number, pages, page.total)
    rows = chosen.selection.rows
    if not rows:
        st.session_state.pop(SHOWN, None)
        # The narrow columns cut long notes and model names, and a phone scrolls the last ones
        # sideways: the panel a row opens says all of it.
        st.caption(
            "Select a row to read it whole and give or change its feedback; on a narrow "
            "screen, slide the table sideways for the rest of its columns."
        )
        return
    item = page.items[rows[0]]
    _feedback(client, item)
    if st.session_state.get(SHOWN) != item.id:  # just selected: its form, below the table
        st.session_state[SHOWN] = item.id
        bring_into_view("history-feedback", f"prediction {item.id}")


def _table(client: ApiClient, page: HistoryPage, page_number: int) -> Any:
    """The page's predictions, one selectable row each; returns Streamlit's selection."""
    zone = local_zone()
    table = pd.DataFrame(
        [
            {
                # What a person reads first, left; the wide, rarely read columns last, where
                # a narrow screen scrolls them off: at a phone's width the thumbnail, the
                # answer, its score and the mark of what was said of it fit. The feedback
                # panel below names the selected row's file.
                "Image": _thumbnail(client, item.id),
                "Answer": _answer(item),
                "Score": percent(item.score),
                "You": _verdict(item),
                "File": item.original_name or item.image_file_name,
                "Your feedback": _said(item),
                "When": when(item.created_at, zone),
                "Model": item.model_id,
            }
            for item in page.items
        ]
    )
    return st.dataframe(
        table,
        # Widths that fit the page's 704 pixels with the selection column (a 1280-pixel
        # window); left to themselves the columns took their content's width, and When and
        # Model fell off the right edge.
        column_config={
            "Image": st.column_config.ImageColumn("Image", width=64),
            "Answer": st.column_config.TextColumn("Answer", width=120),
            "Score": st.column_config.TextColumn("Score", width=56),
            "You": st.column_config.TextColumn(
                "You", width=36, help="What you said: ✓ right, ✗ wrong, ✎ a note alone"
            ),
            "File": st.column_config.TextColumn("File", width=90),
            "Your feedback": st.column_config.TextColumn(
                "Your feedback", width=100, help="The class you named, and your note"
            ),
            "When": st.column_config.TextColumn("When", width=116, help=f"Times in {zone}"),
            "Model": st.column_config.TextColumn("Model", width=90),
        },
        # As tall as its rows: at most ten by default, which the 64-pixel rows overflowed.
        height="content",
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=f"history-table-{page_number}",
        row_height=64,
    )


def _pager(page_number: int, pages: int, total: int) -> None:
    with st.container(horizontal=True, vertical_alignment="center", key="history-pager"):
        st.button(
            "Newer",
            icon=":material/chevron_left:",
            disabled=page_number == 1,
            on_click=_turn,
            args=(-1,),
            key="history-newer",
        )
        st.markdown(f"Page {page_number} of {pages} · {total} prediction{'s' * (total != 1)}")
        st.button(
            "Older",
            icon=":material/chevron_right:",
            disabled=page_number == pages,
            on_click=_turn,
            args=(1,),
            key="history-older",
        )


def _feedback(client: ApiClient, item: HistoryItem) -> None:
    name = item.original_name or item.image_file_name
    with st.container(border=True, key="history-feedback"):
        # The model in full: the table's column is too narrow for the longer ids.
        answer = f"{display_name(item.label)}, {percent(item.score)}, by {item.model_id}"
        st.markdown(f"**Feedback on {escape_markdown(name)}**: {escape_markdown(answer)}")
        if item.feedback:
            st.caption(f"You said: {escape_markdown(feedback_in_words(item.feedback.feedback))}")
        rated = Rated(
            item.id,
            item.label,
            item.score,
            item.image_file_name,
            [scored.label for scored in item.top_k[1:]],
        )
        if render_feedback_form(client, rated, f"fbh-{item.id}", item.feedback):
            st.session_state[SAVED] = f"Your feedback on {name} was saved."
            st.rerun()
