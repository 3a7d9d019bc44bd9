"""The Classify tab's choice of model, each described in words from what ``GET /models`` says:
its precision, input size and published accuracy, and its speed next to the default model's."""

from __future__ import annotations

import math
from collections.abc import Sequence

import streamlit as st

from imgclf.ui import session
from imgclf.ui.client import ApiClient, ApiError, Model

CHOICE = session.MODEL_CHOICE
# INT8 (static QDQ, per-channel) ran 2.1x FP32's images/s at batch 1 (2.26x at batch 8) on a
# CPU with VNNI, 1.67x (1.88x) with 7-bit weights on one with AVX2 only (docs/benchmarks.md).
INT8_SPEEDUP = 2.1
# Compound-scaled families (EfficientNet) grow depth and width with the input side: compute
# doubles for each 1.15x of the side, so it goes about as the side's fifth power (Lite2 at
# 260 px: 0.47x Lite0's speed by this rule, 0.45-0.5x measured in docs/benchmarks.md).
SIDE_EXPONENT = 5.0


def relative_speed(model: Model, reference: Model) -> float:
    """About how many times ``reference``'s images per second ``model`` manages."""

    def cost(m: Model) -> float:
        speedup = INT8_SPEEDUP if m.precision == "int8" else 1.0
        return math.pow(m.input_size, SIDE_EXPONENT) / speedup

    return cost(reference) / cost(model)


def speed_words(speed: float, *, is_default: bool = False) -> str:
    if is_default:
        return "standard speed"
    if 0.85 <= speed <= 1.15:
        return "about as fast as the default"
    if speed > 1:
        return f"about {speed:.1f}x the speed".replace(".0x", "x")
    if 0.4 <= speed <= 0.6:
        return "about half the speed"
    return f"about {speed:.0%} of the speed"


def describe(model: Model, models: Sequence[Model]) -> str:
    """One line in plain words: "Fast — about 2.1x the speed, 74.4% right on ImageNet"; the
    default model is the speed reference. ``details`` says which network it is."""
    reference = next((m for m in models if m.default), models[0])
    speeds = {m.name: relative_speed(m, reference) for m in models}
    accuracies = [m.accuracy for m in models if m.accuracy is not None]
    tags = []
    if model.default:
        tags.append("Default")
    if len(models) > 1 and speeds[model.name] == max(speeds.values()):
        tags.append("Fast")
    if accuracies and len(models) > 1 and model.accuracy == max(accuracies):
        tags.append("Most accurate")
    parts = [speed_words(speeds[model.name], is_default=model.default)]
    if model.accuracy is not None:
        parts.append(f"{model.accuracy:.1%} right on ImageNet")
    if model.workers == 0:
        parts.append("no worker serving it now")
    line = ", ".join(parts)
    return f"{' · '.join(tags)} — {line}" if tags else line


def details(model: Model) -> str:
    """Which network answers, for those who know them: "efficientnet-lite0-int8@1, INT8,
    224 px"."""
    return f"{model.live}, {model.precision.upper()}, {model.input_size} px"


def render(client: ApiClient) -> str | None:
    """The model the user picked (the API's default unless they chose), or None, leaving the
    choice to the API, when the list cannot be had."""
    models = session.authorized(client, client.models)
    if isinstance(models, ApiError) or not models:
        return None
    names = [m.name for m in models]
    if st.session_state.get(CHOICE) not in names:  # first visit, or the model went away
        st.session_state[CHOICE] = next((m.name for m in models if m.default), names[0])
    if len(models) == 1:
        return names[0]
    lines = {m.name: describe(m, models) for m in models}
    # Buttons, not a list: their lines wrap on a phone, where a list's options were cut to
    # "standard spe…" and "about 2.1x t…", the part that tells the models apart.
    chosen = st.radio(
        "Model",
        names,
        format_func=lines.__getitem__,
        # The network's name, precision and input size under each, small: the line above is
        # what tells most people which to pick.
        captions=[details(m) for m in models],
        key=CHOICE,
        help="Faster models answer sooner; more accurate ones are right more often.",
    )
    return str(chosen)
