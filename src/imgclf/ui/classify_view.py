"""Add images (drop, paste, browse, or pick a sample) and they are classified at once;
one answer is a full card, several a compact grid with a CSV or JSON download.

Images are kept by content and model: the same file added again for the same model is not sent
again, so it makes no second prediction and its feedback form does not come back empty.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import pandas as pd
import streamlit as st

from imgclf.settings import get_settings
from imgclf.ui import model_picker, session
from imgclf.ui.client import ApiClient, ApiError, Prediction
from imgclf.ui.preview import Preview, make_preview
from imgclf.ui.result_view import headline, render_card, render_tile
from imgclf.ui.scroll import bring_into_view
from imgclf.ui.shelf import MAX_BYTES_PER_USER

# Files over the size limit are kept out of the uploader before it sees them, and said so in a
# note of the page's own: refused by the uploader itself, they vanished without a word when
# added beside others, as it is replaced once those are classified. Listened for once per
# page, in the capture phase (before the uploader's own handlers), for drops and for picks.
SIZE_SCRIPT = """<script>
if (window.imgclfSizes === undefined) {
  window.imgclfSizes = true;
  const limit = LIMIT_BYTES;
  const input = () => document.querySelector("[data-testid=stFileUploaderDropzoneInput]");
  const say = (names) => {
    let note = document.getElementById("imgclf-too-large");
    if (!note) {
      note = document.createElement("div");
      note.id = "imgclf-too-large";
      note.setAttribute("role", "alert");
      note.style.cssText = "position:fixed;left:50%;bottom:1.5rem;transform:translateX(-50%);"
        + "max-width:90vw;padding:0.75rem 1rem;border-radius:0.5rem;z-index:1000;"
        + "background:#fdecea;color:#7d1a14;font:0.95rem sans-serif;";
      document.body.appendChild(note);
    }
    note.textContent = `${names.join(", ")}: larger than the LIMIT_WORDS limit, so not added.`;
    clearTimeout(window.imgclfSizeNote);
    window.imgclfSizeNote = setTimeout(() => note.remove(), 10000);
  };
  const within = (files) => {
    const large = files.filter((file) => file.size > limit);
    if (large.length) say(large.map((file) => file.name));
    const transfer = new DataTransfer();
    files.filter((file) => file.size <= limit).forEach((file) => transfer.items.add(file));
    return transfer.files;
  };
  document.addEventListener("change", (event) => {
    if (event.target !== input() || [...event.target.files].every((f) => f.size <= limit)) return;
    event.target.files = within([...event.target.files]);
    if (!event.target.files.length) event.stopImmediatePropagation();
  }, true);
  document.addEventListener("drop", (event) => {
    const files = [...(event.dataTransfer?.files || [])];
    const zone = event.target.closest?.("[data-testid=stFileUploaderDropzone]");
    if (!zone || !input() || files.every((file) => file.size <= limit)) return;
    event.preventDefault();
    event.stopPropagation();
    zone.dispatchEvent(new DragEvent("dragleave", {bubbles: true}));  // its highlight ends
    input().files = within(files);
    if (input().files.length) input().dispatchEvent(new Event("change", {bubbles: true}));
  }, true);
}
</script>"""
# Images pasted anywhere on the page (Ctrl+V) go to the uploader, as a drop would. Listened
# for once per page; the uploader's input is looked up at paste time (reruns replace it).
PASTE_SCRIPT = """<script>
if (window.imgclfPastes === undefined) {
  window.imgclfPastes = 0;
  document.addEventListener("paste", (event) => {
    const pasted = [...(event.clipboardData?.files || [])];
    const files = pasted.filter((file) => file.type.startsWith("image/"));
    const input = document.querySelector("[data-testid=stFileUploaderDropzoneInput]");
    if (!files.length || !input) return;
    const transfer = new DataTransfer();
    // A screenshot comes as "image.png"; name each paste after its type.
    files.forEach((file) => transfer.items.add(new File(
      [file], `pasted-${++window.imgclfPastes}.${file.type.split("/")[1]}`, {type: file.type})));
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", {bubbles: true}));
    event.preventDefault();
  });
}
</script>"""

# Small photos shipped with the package (scikit-image's CC0 "chelsea" and "coffee", and the
# project's own dog), for a first try without a photo at hand.
SAMPLES = {"Dog": "dog.jpeg", "Cat": "cat.jpeg", "Coffee": "coffee.jpeg"}
GRID_COLUMNS = 3
CARD_SIDE, TILE_SIDE, SAMPLE_SIDE = 512, 256, 96
UPLOADER_ROUND = "uploader_round"
NEW_ANSWERS = "new_answers"  # set when images were just classified: show their answers
REPEATS = "repeats"  # files just added again, unchanged


@dataclass(frozen=True)
class Upload:
    """One image the user added: its name and its bytes."""

    name: str
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class ImageResult:
    upload: Upload
    outcome: Prediction | ApiError


def images() -> dict[str, ImageResult]:
    """The tab's images by model and content hash, in the order they were added."""
    kept: dict[str, ImageResult] = st.session_state.setdefault(session.IMAGES, {})
    return kept


@cache
def sample(file_name: str) -> bytes:
    return resources.files("imgclf.ui").joinpath("samples", file_name).read_bytes()


@st.cache_data(max_entries=256, show_spinner=False)
def preview_of(data: bytes, side: int) -> Preview:
    """Previews are remade on every rerun otherwise; keyed by content, so any user's copy of an
    image is the same preview."""
    return make_preview(data, side)


def image_key(upload: Upload, model: str | None) -> str:
    return f"{model or ''}/{upload.digest}"


# Of a file that is not an image, enough for its card to say so again.
NOT_AN_IMAGE_KEPT_BYTES = 1024


def classify(client: ApiClient, uploads: Sequence[Upload], model: str | None = None) -> None:
    """Ask ``model`` about each new image in turn; an image it already answered on the tab is
    not sent."""
    kept = images()
    fresh = {image_key(u, model): u for u in uploads if image_key(u, model) not in kept}
    st.session_state[REPEATS] = [u.name for u in uploads if image_key(u, model) in kept]
    progress = st.progress(0.0) if len(fresh) > 1 else None
    for done, (key, upload) in enumerate(fresh.items(), start=1):
        preview = preview_of(upload.data, TILE_SIDE)
        if preview.not_an_image:  # no use asking the model, nor keeping megabytes of it
            outcome: Prediction | ApiError = ApiError(preview.refusal or "")
            upload = Upload(upload.name, upload.data[:NOT_AN_IMAGE_KEPT_BYTES])
        else:
            outcome = session.authorized(client, _predict(client, upload, model))
        kept[key] = ImageResult(upload, outcome)
        if progress is not None:
            progress.progress(done / len(fresh), text=f"{done} of {len(fresh)} classified")
    _keep_newest_within(kept, MAX_BYTES_PER_USER)


def _keep_newest_within(kept: dict[str, ImageResult], budget: int) -> None:
    """Drop the oldest images until the tab holds at most ``budget`` bytes of them (the
    shelf's budget per user: a tab keeps no more than its user's reloads find)."""
    held = sum(len(result.upload.data) for result in kept.values())
    for key in list(kept):
        if held <= budget:
            return
        held -= len(kept.pop(key).upload.data)


def _predict(
    client: ApiClient, upload: Upload, model: str | None
) -> Callable[[str], Prediction | ApiError]:
    return lambda token: client.predict(token, upload.name, upload.data, model)


def _megabytes() -> str:
    return f"{get_settings().max_upload_bytes / 2**20:g} MB"


def _ways_in(client: ApiClient) -> None:
    model = model_picker.render(client)
    round_ = st.session_state.setdefault(UPLOADER_ROUND, 0)
    st.html(PASTE_SCRIPT, unsafe_allow_javascript=True)
    limit = get_settings().max_upload_bytes
    size_script = SIZE_SCRIPT.replace("LIMIT_BYTES", str(limit))
    st.html(size_script.replace("LIMIT_WORDS", _megabytes()), unsafe_allow_javascript=True)
    # Files of any kind are taken, and those that are not pictures get a card saying so: files
    # the uploader refused itself vanished without a word when added beside others, as it is
    # replaced once they are classified. Files over the size limit still are refused there.
    files = st.file_uploader(
        "Drop, paste or browse images",
        accept_multiple_files=True,
        key=f"uploader-{round_}",
        help=f"JPEG, PNG, GIF, WebP or BMP, up to {_megabytes()} each. The model knows the "
        "1000 classes of ImageNet: animals, plants, objects and foods, not people.",
    )
    # The size limit is already written in the uploader's own box.
    st.caption(
        "JPEG, PNG, GIF, WebP or BMP. The model knows the 1000 ImageNet classes (animals, "
        "plants, objects, foods), not people. No photo at hand? Try one of these:"
    )
    picked: list[Upload] = []
    with st.container(horizontal=True, key="samples"):
        for title, file_name in SAMPLES.items():
            with st.container(width=SAMPLE_SIDE, gap="small"):
                st.image(preview_of(sample(file_name), SAMPLE_SIDE).picture or b"", width="stretch")
                if st.button(title, key=f"sample-{title.lower()}", width="stretch"):
                    picked.append(Upload(file_name, sample(file_name)))
    added = [Upload(file.name, file.getvalue()) for file in files or []] + picked
    if not added:
        repeats = st.session_state.pop(REPEATS, [])
        if repeats:
            st.info(
                f"{', '.join(repeats)}: already here, so not classified again.",
                icon=":material/content_copy:",
            )
        return
    before = set(images())
    with st.spinner(f"Classifying {_images(len(added))}…"):
        classify(client, added, model)
    # A fresh uploader for the next drop: the files now live on the tab, by content.
    st.session_state[UPLOADER_ROUND] = round_ + 1
    # Scrolled to only when there is something new (not for files already here: their notice
    # is by the uploader).
    st.session_state[NEW_ANSWERS] = not set(images()) <= before
    st.rerun()


def rows(results: Sequence[ImageResult]) -> list[dict[str, object]]:
    """The answers as a table a spreadsheet opens: one row per image."""
    table: list[dict[str, object]] = []
    for result in results:
        outcome = result.outcome
        if isinstance(outcome, ApiError):
            table.append({"file": result.upload.name, "error": outcome.message})
            continue
        table.append(
            {
                "file": result.upload.name,
                "prediction": outcome.prediction,
                "score": outcome.score,
                "answer": headline(outcome),
                "top_5": "; ".join(f"{i.label} {i.score:.4f}" for i in outcome.top_k),
                "model": outcome.model,
                "prediction_id": outcome.prediction_id,
            }
        )
    return table


def _images(count: int) -> str:
    return "image" if count == 1 else f"{count} images"


def answers_csv(results: Sequence[ImageResult]) -> str:
    """The table as CSV. Ids stay whole numbers where some rows (refusals) have none: pandas
    would write them as 1.0, 2.0."""
    frame = pd.DataFrame(rows(results))
    if "prediction_id" in frame:
        frame["prediction_id"] = frame["prediction_id"].astype("Int64")
    return str(frame.to_csv(index=False))


def _tally(results: Sequence[ImageResult]) -> str:
    """The count above the cards: **5** images: 4 answered, 1 refused (each refused card says
    why)."""
    refused = sum(1 for r in results if isinstance(r.outcome, ApiError))
    count = f"**{len(results)}** image{'s' * (len(results) != 1)}"
    return f"{count}: {len(results) - refused} answered" + (f", {refused} refused" * bool(refused))


def _toolbar(results: Sequence[ImageResult]) -> None:
    table = rows(results)
    with st.container(horizontal=True, vertical_alignment="center", key="toolbar"):
        st.markdown(_tally(results))
        st.download_button(
            "CSV",
            answers_csv(results),
            file_name="imgclf-answers.csv",
            mime="text/csv",
            icon=":material/download:",
            key="download-csv",
            on_click="ignore",  # a download changes nothing on the page
        )
        st.download_button(
            "JSON",
            json.dumps(table, indent=2),
            file_name="imgclf-answers.json",
            mime="application/json",
            icon=":material/download:",
            key="download-json",
            on_click="ignore",
        )
        # Asked first: a click took every card away, and the feedback not yet sent with them.
        with st.popover("Clear all", icon=":material/delete_sweep:", key="clear-all"):
            st.markdown(
                f"Remove {'the' if len(results) > 1 else 'this'} {_images(len(results))} from "
                "this page? Their answers stay in History; feedback not yet sent is lost."
            )
            if st.button("Clear", type="primary", key="clear-all-yes"):
                st.session_state[session.IMAGES] = {}
                st.rerun()


def render(client: ApiClient) -> None:
    _ways_in(client)
    results = list(images().values())
    if not results:
        return
    with st.container(key="answers"):
        _answers(client, results)
    if st.session_state.pop(NEW_ANSWERS, False):
        bring_into_view("answers", f"round {st.session_state.get(UPLOADER_ROUND, 0)}")


def _answers(client: ApiClient, results: list[ImageResult]) -> None:
    _toolbar(results)
    if len(results) == 1:
        (result,) = results
        render_card(
            client, result.upload.name, preview_of(result.upload.data, CARD_SIDE), result.outcome
        )
        return
    for start in range(0, len(results), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS)
        for column, result in zip(columns, results[start : start + GRID_COLUMNS], strict=False):
            with column:
                render_tile(
                    client,
                    result.upload.name,
                    preview_of(result.upload.data, TILE_SIDE),
                    result.outcome,
                )
