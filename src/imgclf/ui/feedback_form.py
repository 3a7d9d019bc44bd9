"""Feedback on one prediction: right or wrong, the right class, a comment; sent with its id.

The same form serves a fresh answer on the Classify tab and any row of History. If the login
has ended when Send is pressed, the form's state is kept and it is sent after the next log-in
(``session.expire``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import streamlit as st

from imgclf.ui import session
from imgclf.ui.client import ApiClient, ApiError, Feedback
from imgclf.ui.labels import choices, display_name

YES, NO = "Yes", "No"
# The note's limit, checked on send with a message (a text area's own max_chars threw away a
# longer note pasted into it without a word); the verdict and class fit in the API's 2000.
MAX_COMMENT = 1000
# Class labels hold no spaces ("Egyptian_cat", "jack-o'-lantern").
_RIGHT_CLASS = re.compile(r"Right class: (\S+)\.")
# What ``feedback_text`` puts before the note.
_VERDICT = re.compile(r"(?:Correct\.|Wrong\.(?: Right class: \S+\.)?)(?:\s|$)")


@dataclass(frozen=True)
class Rated:
    """What feedback is about."""

    prediction_id: int
    label: str
    score: float
    image_file_name: str
    runners_up: list[str]


def feedback_text(correct: bool, right_class: str | None, comment: str) -> str:
    """What the API stores: the verdict first, in words a person and a script can both read."""
    verdict = "Correct." if correct else "Wrong."
    if not correct and right_class:
        verdict += f" Right class: {right_class}."
    return f"{verdict} {comment.strip()}".strip()


def note_of(text: str) -> str:
    """The note in stored feedback: what follows the verdict (all of it when the text starts
    with none, as a seed client's may)."""
    verdict = _VERDICT.match(text)
    return (text[verdict.end() :] if verdict else text).strip()


def feedback_in_words(text: str) -> str:
    """Stored feedback as a person reads it: the right class by its display name ("Right
    class: Egyptian cat."), where ``feedback_text`` stored its label."""
    return _RIGHT_CLASS.sub(lambda found: f"Right class: {display_name(found[1])}.", text, 1)


def _starting(key: str, index: int | None) -> int | None:
    """The ``index`` a field is given: what was said before, unless the field has a value
    already (a draft kept over a reload or a login's end, or the last run's). Streamlit then
    shows that value and ignores ``index``, and logs a warning unless ``index`` is its default,
    0, which is why 0 (it selects nothing here)."""
    return 0 if key in st.session_state else index


def _right_class(rated: Rated, key: str, given: Feedback | None) -> str | None:
    """The class the user says it is, chosen among the classes (or none)."""
    classes = choices(rated.runners_up)
    named = given.correct_class if given else None
    # Classes only: with free text allowed, the box offered "Add: <what was typed>" above the
    # classes it matched, so Enter on "Siberian" saved "Siberian", which no model knows,
    # instead of Siberian husky. Words of one's own go in the comment.
    return st.selectbox(
        "What is it? (optional)",
        classes,
        index=_starting(f"{key}-class", classes.index(named) if named in classes else None),
        format_func=display_name,
        placeholder="Type to search the classes",
        key=f"{key}-class",
    )


def render_feedback_form(
    client: ApiClient, rated: Rated, key: str, given: Feedback | None = None
) -> Feedback | None:
    """The form under ``key`` (``fb-<id>`` or ``fbh-<id>``), starting from the feedback
    ``given`` before, if any; the stored feedback once sent."""
    said = None if given is None or given.correct is None else (0 if given.correct else 1)
    verdict = st.radio(
        "Is this right?",
        [YES, NO],
        index=_starting(f"{key}-correct", said),
        horizontal=True,
        key=f"{key}-correct",
    )
    right_class = _right_class(rated, key, given) if verdict == NO else None
    comment = st.text_area(
        f"Anything else? (optional, at most {MAX_COMMENT} characters; say what it is here if "
        "no class fits)",
        # The note said before, so that changing the verdict does not send it away.
        value=""
        if given is None or f"{key}-comment" in st.session_state
        else note_of(given.feedback),
        height=68,
        key=f"{key}-comment",
    )
    # Said under the note, above Send, as soon as the note is in: a message after Send could
    # fall below the visible edge of a grid tile's popover.
    too_long = len(comment or "") > MAX_COMMENT
    if too_long:
        st.error(
            f"Your note is {len(comment):,} characters; at most {MAX_COMMENT:,} fit. Shorten "
            "it and send again.",
            icon=":material/error:",
        )
    # Not disabled by a note too long: a click on Send is what commits the shortened note
    # (the box loses focus), and a button disabled until then dropped that click, so it took
    # two. A note still too long is not sent (below), the message above saying why.
    pressed = st.button("Send feedback", key=f"{key}-send", disabled=verdict is None)
    if not (pressed or session.take_pending_send(rated.prediction_id)) or verdict is None:
        return None
    if too_long:
        return None
    text = feedback_text(verdict == YES, right_class, comment or "")
    stored = session.authorized(
        client,
        lambda token: client.send_feedback(
            token,
            text,
            score=rated.score,
            predicted_class=rated.label,
            image_file_name=rated.image_file_name,
            prediction_id=rated.prediction_id,
        ),
    )
    if isinstance(stored, ApiError):
        st.error(f"Your feedback was not saved: {stored.message}", icon=":material/error:")
        return None
    st.session_state.setdefault(session.FEEDBACK_SENT, {})[rated.prediction_id] = stored
    return stored
