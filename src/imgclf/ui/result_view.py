"""One image's answer: the class in words, how sure, the top-5 chart, and feedback on it; as a
full card for a lone image, or a compact tile in a grid of several."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from imgclf.ui import session
from imgclf.ui.client import ApiClient, ApiError, Prediction
from imgclf.ui.feedback_form import Rated, feedback_in_words, render_feedback_form
from imgclf.ui.labels import display_name
from imgclf.ui.preview import DAMAGED, Preview
from imgclf.ui.text import escape_markdown, percent

# Below this the card says it is not sure and names the candidates: the best of 1000 classes at
# 5% (a plain red square is "velvet") is a guess, not an answer.
SURE_ENOUGH = 0.5
TOP_COLOR, OTHER_COLOR = "#FF4B4B", "#A3A8B8"

# Once sent from a card, feedback is changed from History: the card says where.
FEEDBACK_SAVED = "Thank you! Your feedback was saved. To change it, open History."


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


def either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def headline(prediction: Prediction) -> str:
    """The answer in a few words: the class, or "Not sure — maybe …" when it is a guess."""
    if prediction.score >= SURE_ENOUGH:
        return display_name(prediction.prediction)
    candidates = [display_name(item.label) for item in prediction.top_k[:3]]
    return f"Not sure — maybe {either(candidates)}"


def _picture(place: st.delta_generator.DeltaGenerator, name: str, preview: Preview) -> None:
    if preview.picture is not None:
        place.image(preview.picture, caption=name, width="stretch")
    else:
        place.error(
            f"**{escape_markdown(name)}**: {preview.refusal or 'no preview.'}",
            icon=":material/block:",
        )


def _refusal(name: str, outcome: ApiError) -> None:
    st.error(
        f"**{escape_markdown(name)}** was not classified: {outcome.message}",
        icon=":material/block:",
    )


def _unusable(name: str, preview: Preview, outcome: ApiError) -> None:
    """One card for a file with neither a picture nor an answer, saying each reason once."""
    if preview.refusal == DAMAGED and outcome.status is not None:
        # The API's refusal says what is damaged ("the file is empty"): it is enough.
        st.error(f"**{escape_markdown(name)}**: {outcome.message}", icon=":material/block:")
        return
    reasons = dict.fromkeys([preview.refusal or "No preview.", outcome.message])
    if len(reasons) > 1:
        reasons = dict.fromkeys(
            [preview.refusal or "No preview.", f"Not classified: {outcome.message}"]
        )
    st.error(f"**{escape_markdown(name)}**: {' '.join(reasons)}", icon=":material/block:")


def _rated(prediction: Prediction) -> Rated:
    return Rated(
        prediction.prediction_id,
        prediction.prediction,
        prediction.score,
        prediction.image_file_name,
        [item.label for item in prediction.top_k[1:]],
    )


def _feedback(client: ApiClient, prediction: Prediction) -> None:
    sent = st.session_state.get(session.FEEDBACK_SENT, {}).get(prediction.prediction_id)
    if sent is not None:
        st.success(FEEDBACK_SAVED, icon=":material/check_circle:")
        # What was saved, as History says it: the form that said it is gone.
        st.caption(f"You said: {escape_markdown(feedback_in_words(sent.feedback))}")
        return
    if render_feedback_form(client, _rated(prediction), f"fb-{prediction.prediction_id}"):
        st.rerun()


def render_card(
    client: ApiClient, name: str, preview: Preview, outcome: Prediction | ApiError
) -> None:
    """The full answer for a lone image."""
    with st.container(border=True):
        if preview.picture is None and isinstance(outcome, ApiError):
            _unusable(name, preview, outcome)
            return
        picture, answer = st.columns([2, 3], gap="medium")
        _picture(picture, name, preview)
        with answer:
            if isinstance(outcome, ApiError):
                _refusal(name, outcome)
                return
            if outcome.score >= SURE_ENOUGH:
                st.caption("Most likely")
                st.markdown(f"### {display_name(outcome.prediction)}")
                st.markdown(f"**{percent(outcome.score)}** sure")
            else:
                st.caption("Not sure")
                candidates = [display_name(item.label) for item in outcome.top_k[:3]]
                st.markdown(f"### Maybe {either(candidates)}")
                st.markdown(
                    f"At most **{percent(outcome.score)}** sure: the picture may show none of "
                    "the 1000 things the model knows."
                )
            st.altair_chart(top_k_chart(outcome), width="stretch")
            st.caption(f"Answered by `{outcome.model}`")
        _feedback(client, outcome)


def render_tile(
    client: ApiClient, name: str, preview: Preview, outcome: Prediction | ApiError
) -> None:
    """A small answer in a grid: picture, headline, and the details and feedback on demand."""
    with st.container(border=True):
        if preview.picture is None and isinstance(outcome, ApiError):
            _unusable(name, preview, outcome)
            return
        _picture(st.container(), name, preview)
        if isinstance(outcome, ApiError):
            _refusal(name, outcome)
            return
        # "At most" where the headline says it is not sure ("Not sure ... 2.1% sure" read oddly).
        sure = "" if outcome.score >= SURE_ENOUGH else "At most "
        st.markdown(
            f"**{escape_markdown(headline(outcome))}**  \n{sure}{percent(outcome.score)} sure, "
            f"by `{outcome.model}`"
        )
        if outcome.prediction_id in st.session_state.get(session.FEEDBACK_SENT, {}):
            st.caption(":material/check_circle: Feedback sent")
        # Open or closed is kept by the server (a key, and a rerun when it changes): left to
        # the page, a popover whose place in the page moved in a rerun (a message above the
        # grid came or went) was drawn afresh, closed, in the middle of a feedback being
        # written. Its content runs either way, so that a form's draft lives on when closed.
        # Its label and icon stay as they are (another label makes another popover, closed).
        with st.popover(
            "Details and feedback",
            icon=":material/rate_review:",
            width="stretch",
            key=f"tile-{outcome.prediction_id}",
            on_change="rerun",
        ):
            st.altair_chart(top_k_chart(outcome), width="stretch")
            _feedback(client, outcome)
