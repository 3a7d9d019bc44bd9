"""The admin page: the models and their live version (promote or roll back, after a
confirmation), how often each version was right by its users' feedback, the classes most
corrected, and the shadow comparisons. Only admins get the tab; the API refuses anyone else."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from imgclf.ui import session
from imgclf.ui.admin_charts import agreement_by_day_chart, agreement_chart, quality_chart
from imgclf.ui.client import ApiClient, ApiError, Model, QualityReport, ShadowReport
from imgclf.ui.labels import display_name
from imgclf.ui.text import escape_markdown, percent

PENDING = "admin-pending-swap"  # (model name, version) waiting for its confirmation
DONE = "admin-swap-done"


def _models_table(models: list[Model]) -> None:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Model": m.name,
                    "Live": m.live,
                    "Versions": ", ".join(str(v) for v in m.versions),
                    "Precision": m.precision.upper(),
                    "Input": f"{m.input_size} px",
                    "ImageNet top-1": f"{m.accuracy:.1%}" if m.accuracy is not None else "",
                    "Workers": m.workers,
                    "Queue": m.queue_depth,
                }
                for m in models
            ]
        ),
        hide_index=True,
    )


def _swap_control(client: ApiClient, models: list[Model]) -> None:
    by_name = {m.name: m for m in models}
    with st.container(horizontal=True, vertical_alignment="bottom", key="admin-swap"):
        name = st.selectbox("Model", list(by_name), key="admin-swap-model")
        model = by_name[str(name)]
        version = st.selectbox(
            "Version",
            model.versions,
            index=model.versions.index(model.live_version),
            key="admin-swap-version",
        )
        if st.button("Make live", icon=":material/swap_horiz:", key="admin-swap-ask"):
            st.session_state[PENDING] = (model.name, int(version))
    pending = st.session_state.get(PENDING)
    if not pending:
        return
    target, wanted = pending
    live = by_name[target].live_version if target in by_name else None
    if wanted == live:
        st.info(f"{target}@{wanted} is already live.")
        st.session_state.pop(PENDING)
        return
    move = "roll back" if live is not None and wanted < live else "promote"
    with st.container(border=True, key="admin-confirm"):
        st.warning(
            f"{move.capitalize()} {escape_markdown(target)} from version {live} to {wanted}? "
            "New requests get it once its workers have loaded it; none fails meanwhile.",
            icon=":material/warning:",
        )
        with st.container(horizontal=True):
            if st.button(f"Yes, {move}", type="primary", key="admin-confirm-yes"):
                st.session_state.pop(PENDING)
                with st.spinner(f"Loading {target}@{wanted} on its workers…"):
                    swapped = session.authorized(
                        client, lambda t: client.make_live(t, target, wanted)
                    )
                if isinstance(swapped, ApiError):
                    st.error(f"Not swapped: {swapped.message}", icon=":material/error:")
                    return
                st.session_state[DONE] = f"{swapped.live} is live."
                st.rerun()
            if st.button("Cancel", key="admin-confirm-no"):
                st.session_state.pop(PENDING)
                st.rerun()


def _quality(report: QualityReport) -> None:
    st.subheader("Right or wrong, by their users")
    if not report.models:
        st.info("No predictions yet, so no feedback to count.")
        return
    if any(q.judges for q in report.models):
        st.altair_chart(quality_chart(report), width="stretch")
    else:
        st.info("No one has marked an answer right or wrong yet.")
    st.caption(
        "Share of each version's answers that users marked right, marked wrong, or left "
        "unmarked (a user's repeats of one picture once); the whiskers are 95% (Wilson) "
        "intervals; versions no one has marked are not drawn. "
        + " · ".join(
            f"{q.model}: {_count(q.predictions, 'picture')}, marked by {_count(q.judges, 'user')}"
            for q in report.models
        )
    )
    corrected = [
        {
            "Version": quality.model,
            "Answered": display_name(item.predicted_class),
            "Marked wrong": item.wrong,
            "Users said": ", ".join(
                f"{display_name(c.correct_class) if c.correct_class else 'not said'} ({c.count})"
                for c in item.corrected_to
            ),
        }
        for quality in report.models
        for item in quality.most_corrected
    ]
    st.markdown("**Most corrected classes**")
    if corrected:
        st.dataframe(pd.DataFrame(corrected), hide_index=True, key="admin-corrected")
    else:
        st.caption("No answer has been marked wrong yet.")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _shadow_of(client: ApiClient, name: str) -> Callable[[str], ShadowReport | ApiError]:
    return lambda token: client.shadow(token, name)


def _shadows(client: ApiClient, models: list[Model]) -> None:
    st.subheader("Shadow comparisons")
    for model in models:
        report = session.authorized(client, _shadow_of(client, model.name))
        if isinstance(report, ApiError):
            if report.status in (404, 405):  # this API has no shadow comparisons
                st.caption(f"{model.name}: no shadow comparison is set.")
            else:
                st.caption(f"{model.name}: shadow figures unavailable ({report.message})")
            continue
        if report.candidate is None and not report.pairs:
            st.caption(f"{model.name}: no shadow comparison is set.")
            continue
        if report.candidate is not None:
            st.markdown(
                f"**{escape_markdown(model.live)}** vs **{escape_markdown(report.candidate)}**, "
                f"{percent(report.fraction)} of uploads copied"
            )
        if report.pairs:
            st.altair_chart(agreement_chart(report.pairs), width="stretch")
            if any(pair.by_day for pair in report.pairs):
                st.caption("Top-1 agreement day by day, with its 95% band")
                st.altair_chart(agreement_by_day_chart(report.pairs), width="stretch")
            st.caption(
                " · ".join(
                    # Both versions named: a candidate alone read as the model of the next
                    # line, which says it has no shadow comparison of its own.
                    f"{pair.live} vs {pair.candidate}: {pair.comparisons} comparisons, "
                    "top-1 agreement "
                    f"{percent(pair.top1_agreement.share)} (95%: "
                    f"{percent(pair.top1_agreement.interval[0])} to "
                    f"{percent(pair.top1_agreement.interval[1])})"
                    for pair in report.pairs
                )
            )
        else:
            st.caption("No comparison made yet.")


def render(client: ApiClient) -> None:
    models = session.authorized(client, client.models)
    report = session.authorized(client, client.quality)
    for answer in (models, report):
        if isinstance(answer, ApiError):
            st.error(answer.message, icon=":material/error:")
            return
    assert not isinstance(models, ApiError)
    assert not isinstance(report, ApiError)
    done = st.session_state.pop(DONE, None)
    if done:
        st.success(done, icon=":material/check_circle:")
    st.subheader("Models")
    _models_table(models)
    _swap_control(client, models)
    _quality(report)
    _shadows(client, models)
