"""Upload images, classify them, and show each answer with its top-5 and a feedback form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

from imgclf.settings import get_settings
from imgclf.ui import session
from imgclf.ui.client import ApiClient, ApiError, Prediction
from imgclf.ui.preview import make_preview
from imgclf.ui.result_view import render_result
from imgclf.ui.text import escape_markdown

# What the API accepts.
IMAGE_TYPES = ["jpg", "jpeg", "png", "gif", "webp", "bmp"]


@dataclass(frozen=True)
class Upload:
    """One file from the uploader: its uploader id, its name and its bytes."""

    id: str
    name: str
    data: bytes


@dataclass(frozen=True)
class ImageResult:
    upload: Upload
    outcome: Prediction | ApiError


def classify(client: ApiClient, token: str, uploads: Sequence[Upload]) -> list[ImageResult]:
    """Ask the API about each upload in turn; an expired token ends the run (back to login)."""
    results: list[ImageResult] = []
    progress = st.progress(0.0) if len(uploads) > 1 else None
    for done, upload in enumerate(uploads, start=1):
        outcome = session.authorized(client.predict(token, upload.name, upload.data))
        results.append(ImageResult(upload, outcome))
        if progress is not None:
            progress.progress(done / len(uploads), text=f"{done} of {len(uploads)} classified")
    if progress is not None:
        progress.empty()
    return results


def _megabytes() -> str:
    return f"{get_settings().max_upload_bytes / 2**20:g} MB"


def render(client: ApiClient, token: str) -> None:
    files = st.file_uploader(
        "Choose one or more images",
        type=IMAGE_TYPES,
        accept_multiple_files=True,
        key="uploader",
        help=f"JPEG, PNG, GIF, WebP or BMP, up to {_megabytes()} each. The model knows the "
        "1000 classes of ImageNet: animals, plants, objects and foods, not people.",
    )
    uploads = [Upload(file.file_id, file.name, file.getvalue()) for file in files or []]
    preview = st.container()
    clicked = st.button(
        "Classify",
        key="classify",
        type="primary",
        icon=":material/image_search:",
        disabled=not uploads,
        width="stretch",
    )
    if clicked:
        noun = "image" if len(uploads) == 1 else f"{len(uploads)} images"
        with st.spinner(f"Classifying {noun}…"):
            st.session_state[session.RESULTS] = classify(client, token, uploads)

    # Show only the answers for files still in the uploader: removing a file removes its answer.
    current = {upload.id for upload in uploads}
    results = [
        result
        for result in st.session_state.get(session.RESULTS, [])
        if result.upload.id in current
    ]
    answered = {result.upload.id for result in results}
    waiting = [(u, make_preview(u.data)) for u in uploads if u.id not in answered]
    shown = [(upload, made.picture) for upload, made in waiting if made.picture is not None]
    with preview:
        if shown:
            st.image(
                [picture for _upload, picture in shown],
                caption=[upload.name for upload, _picture in shown],
                width=120,
            )
        for upload, made in waiting:
            if made.refusal is not None:
                st.error(
                    f"**{escape_markdown(upload.name)}**: no preview. {made.refusal}",
                    icon=":material/block:",
                )
    for result in results:
        render_result(client, token, result.upload.name, result.upload.data, result.outcome)
