"""The class names the UI ships, and how it shows them."""

from __future__ import annotations

from pathlib import Path

from imgclf.settings import Settings
from imgclf.ui.feedback_form import feedback_in_words, feedback_text, note_of
from imgclf.ui.labels import bundle_class_names, choices, class_names, display_name
from imgclf.ui.launch import streamlit_command
from imgclf.ui.text import escape_markdown


def test_labels_txt_matches_the_model_bundle(model_dir: Path) -> None:
    """Regenerate with ``python -m imgclf.ui.labels data/models/efficientnet-lite0/1``."""
    assert list(class_names()) == bundle_class_names(model_dir)
    assert len(class_names()) == 1000


def test_choices_put_the_runners_up_first_and_name_each_class_once() -> None:
    options = choices(["Siberian_husky", "dogsled"])
    assert options[:3] == ["Siberian_husky", "dogsled", "abacus"]
    assert len(options) == len(set(options)) == 998  # two cranes, two maillots
    assert options.count("crane") == 1


def test_class_names_read_as_words() -> None:
    assert display_name("Eskimo_dog") == "Eskimo dog"
    assert display_name("jack-o'-lantern") == "jack-o'-lantern"


def test_names_a_user_typed_stay_text_in_markdown() -> None:
    assert escape_markdown("![x](http://example.com/t.png)") == (
        "\\!\\[x\\]\\(http\\://example\\.com/t\\.png\\)"
    )


def test_imgclf_ui_runs_streamlit_headless_on_the_ui_port() -> None:
    command = streamlit_command(Settings(ui_port=8599))
    assert command[1:4] == ["-m", "imgclf.ui.page_server", "run"]
    assert command[4].endswith("imgclf/ui/server.py")
    flags = dict(zip(command[5::2], command[6::2], strict=False))
    assert flags["--server.port"] == "8599"
    assert flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert flags["--client.showErrorDetails"] == "none"  # no traceback on the page
    assert flags["--server.fileWatcherType"] == "none"  # the code served is the code started
    assert flags["--server.maxUploadSize"] == "20"  # the API's limit, not Streamlit's 200 MB


def test_stored_feedback_reads_with_the_class_in_words() -> None:
    stored = feedback_text(False, "Egyptian_cat", "Right class: not_a_label. Stripes.")
    assert stored == "Wrong. Right class: Egyptian_cat. Right class: not_a_label. Stripes."
    # The class the form stored, in words; the person's own comment as they wrote it.
    assert feedback_in_words(stored) == (
        "Wrong. Right class: Egyptian cat. Right class: not_a_label. Stripes."
    )
    assert feedback_in_words("Correct.") == "Correct."


def test_the_note_is_what_follows_the_verdict() -> None:
    """History's form starts from the note said before, so a changed verdict keeps it."""
    assert note_of(feedback_text(False, "Siberian_husky", "Blue eyes.")) == "Blue eyes."
    assert note_of(feedback_text(True, None, "Right class: tabby. Stripes.")) == (
        "Right class: tabby. Stripes."
    )
    assert note_of(feedback_text(False, None, "")) == ""
    assert note_of("Correctly so, a seed client's words") == "Correctly so, a seed client's words"
