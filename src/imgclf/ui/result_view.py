"""One image's answer: the class in words, how sure, the top-5 chart, and feedback on it."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from imgclf.ui import session
from imgclf.ui.client import ApiClient, ApiError, Prediction
from imgclf.ui.labels import choices, display_name
from imgclf.ui.preview import make_preview
from imgclf.ui.text import escape_markdown, percent

YES, NO = "Yes", "No"
# Below this the card says it is not sure and names the candidates: the best of 1000 classes at
# 5% (a plain red square is "velvet") is a guess, not an answer.
SURE_ENOUGH = 0.5
TOP_COLOR, OTHER_COLOR = "#FF4B4B", "#A3A8B8"


def top_k_chart(prediction: Prediction) -> alt.LayerChart:
    """Horizontal bars, best first, each labelled with its percentage."""
    data = pd.DataFrame(
        {
            "class": [display_name(item.label) for item in prediction.top_k],
            "score": [item.score for item in prediction.top_k],
            "rank": list(range(1, len(prediction.top_k) + 1)),
        }
    )
    base = alt.Chart(data).encode(
        y=alt.Y("class:N", sort=alt.SortField("rank"), title=None, axis=alt.Axis(labelLimit=150)),
        x=alt.X("score:Q", title=None, scale=alt.Scale(domain=[0, 1.18]), axis=None),
        tooltip=[alt.Tooltip("class:N"), alt.Tooltip("score:Q", format=".2%")],
    )
    bars = base.mark_bar(cornerRadiusEnd=4, height=18).encode(
        color=alt.condition(alt.datum.rank == 1, alt.value(TOP_COLOR), alt.value(OTHER_COLOR))
    )
    labels = base.mark_text(align="left", dx=4).encode(text=alt.Text("score:Q", format=".1%"))
    chart: alt.LayerChart = (bars + labels).properties(height=alt.Step(26))
    return chart


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def feedback_text(correct: bool, right_class: str | None, comment: str) -> str:
    """What the API stores: the verdict first, in words a person and a script can both read."""
    verdict = "Correct." if correct else "Wrong."
    if not correct and right_class:
        verdict += f" Right class: {right_class}."
    return f"{verdict} {comment.strip()}".strip()


def render_result(
    client: ApiClient, token: str, name: str, data: bytes, outcome: Prediction | ApiError
) -> None:
    with st.container(border=True):
        picture, answer = st.columns([2, 3], gap="medium")
        preview = make_preview(data)
        if preview.picture is not None:
            picture.image(preview.picture, caption=name, width="stretch")
        elif preview.refusal is not None:
            picture.error(f"No preview: {preview.refusal}", icon=":material/block:")
        else:
            picture.caption(f"{escape_markdown(name)} (no preview)")
        with answer:
            if isinstance(outcome, ApiError):
                st.error(
                    f"**{escape_markdown(name)}** was not classified: {outcome.message}",
                    icon=":material/block:",
                )
                return
            if outcome.score >= SURE_ENOUGH:
                st.caption("Most likely")
                st.markdown(f"### {display_name(outcome.prediction)}")
                st.markdown(f"**{percent(outcome.score)}** sure")
            else:
                st.caption("Not sure")
                candidates = [display_name(item.label) for item in outcome.top_k[:3]]
                st.markdown(f"### Maybe {_either(candidates)}")
                st.markdown(
                    f"At most **{percent(outcome.score)}** sure: the picture may show none of "
                    "the 1000 things the model knows."
                )
            st.altair_chart(top_k_chart(outcome), width="stretch")
            st.caption(f"Answered by `{outcome.model}`")
        _feedback_form(client, token, outcome)


def _feedback_form(client: ApiClient, token: str, prediction: Prediction) -> None:
    sent: dict[int, object] = st.session_state.setdefault(session.FEEDBACK_SENT, {})
    if prediction.prediction_id in sent:
        st.success("Thank you! Your feedback was saved.", icon=":material/check_circle:")
        return
    key = f"fb-{prediction.prediction_id}"
    verdict = st.radio(
        "Is this right?",
        [YES, NO],
        index=None,
        horizontal=True,
        key=f"{key}-correct",
    )
    right_class = None
    if verdict == NO:
        runners_up = [item.label for item in prediction.top_k[1:]]
        right_class = st.selectbox(
            "What is it?",
            choices(runners_up),
            index=None,
            format_func=display_name,
            placeholder="Type to search the 1000 classes, or your own words",
            accept_new_options=True,
            key=f"{key}-class",
        )
    comment = st.text_area(
        "Anything else? (optional)", max_chars=1000, height=68, key=f"{key}-comment"
    )
    if not st.button("Send feedback", key=f"{key}-send", disabled=verdict is None):
        return
    stored = session.authorized(
        client.send_feedback(
            token,
            feedback_text(verdict == YES, right_class, comment or ""),
            score=prediction.score,
            predicted_class=prediction.prediction,
            image_file_name=prediction.image_file_name,
            prediction_id=prediction.prediction_id,
        )
    )
    if isinstance(stored, ApiError):
        st.error(f"Your feedback was not saved: {stored.message}", icon=":material/error:")
        return
    sent[prediction.prediction_id] = stored
    st.rerun()
