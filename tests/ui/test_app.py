"""The page's logic with Streamlit's AppTest, against the live API (``IMGCLF_API_URL``)."""

from __future__ import annotations

import io
import os
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from imgclf.localservers import free_port
from imgclf.ui import session
from imgclf.ui.classify_view import UPLOADER_ROUND, ImageResult, Upload, answers_csv
from imgclf.ui.client import ApiError, Me, Prediction
from imgclf.ui.history_view import PAGE_SIZE
from imgclf.ui.launch import APP_PATH
from imgclf.ui.preview import NOT_AN_IMAGE
from imgclf.ui.result_view import FEEDBACK_SAVED
from imgclf.ui.session import EXPIRED_NOTICE, KEPT_NOTICE, LOGGED_OUT_KEPT_NOTICE
from imgclf.ui.shelf import SHELF
from imgclf.ui.text import escape_markdown
from tests.conftest import DOG_JPEG
from tests.ui.conftest import PASSWORD, Account
from tests.ui_api import ApiForTests, History


def page(monkeypatch: pytest.MonkeyPatch, api_url: str) -> AppTest:
    monkeypatch.setenv("IMGCLF_API_URL", api_url)
    app = AppTest.from_file(str(APP_PATH), default_timeout=30)
    app.run()
    assert not app.exception
    return app


def logged_in_page(monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account) -> AppTest:
    """The page as it is after a login (the login form has tests of its own)."""
    monkeypatch.setenv("IMGCLF_API_URL", api_url)
    app = AppTest.from_file(str(APP_PATH), default_timeout=30)
    app.session_state[session.TOKEN] = account.token
    app.session_state[session.RENEW_AT] = time.time() + 3600
    app.session_state[session.USER] = account.user
    app.run()
    assert not app.exception
    return app


def log_in(app: AppTest, email: str, password: str) -> None:
    app.text_input(key="login-email").input(email)
    app.text_input(key="login-password").input(password)
    app.button[0].click()  # the login form's submit button comes first on the page
    app.run()
    assert not app.exception


def texts(app: AppTest) -> str:
    """Everything the page says in Markdown, captions and alerts, as one string."""
    parts = [*app.markdown, *app.caption, *app.error, *app.info, *app.success, *app.warning]
    return "\n".join(str(part.value) for part in parts)


def add_files(app: AppTest, *files: tuple[str, bytes, str]) -> None:
    """Drop files on the uploader: they are classified at once."""
    round_ = app.session_state.get(UPLOADER_ROUND, 0)
    app.file_uploader(key=f"uploader-{round_}").set_value(list(files))
    app.run()
    assert not app.exception


def classify_dog(app: AppTest) -> None:
    add_files(app, ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg"))


def only_prediction_id(app: AppTest) -> int:
    (result,) = app.session_state[session.IMAGES].values()
    return int(result.outcome.prediction_id)


def test_the_login_form_is_shown_first(monkeypatch: pytest.MonkeyPatch, api_url: str) -> None:
    app = page(monkeypatch, api_url)
    assert app.text_input(key="login-email").label == "Email"
    assert app.text_input(key="login-password").label == "Password"
    assert [tab.label for tab in app.tabs] == ["Log in", "Sign up"]
    assert api_url not in texts(app)  # the internal address is not for visitors


def test_logging_in_shows_the_user_and_the_classify_tab(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app = page(monkeypatch, api_url)
    log_in(app, account.email, account.password)
    assert app.session_state[session.USER] == Me(**account.user.model_dump(), is_admin=False)
    assert "Signed in as **UI Tester**" in texts(app)
    assert app.file_uploader(key="uploader-0")


def test_a_wrong_password_says_so(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app = page(monkeypatch, api_url)
    log_in(app, account.email, "not the password")
    assert [error.value for error in app.error] == ["Incorrect email or password"]
    assert session.TOKEN not in app.session_state


def test_a_server_that_is_down_is_said_without_its_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    app = page(monkeypatch, url)
    log_in(app, "someone@example.com", PASSWORD)
    assert [error.value for error in app.error] == [
        "The service cannot be reached right now; try again in a minute."
    ]
    assert url.split("//")[1] not in texts(app)


def test_sign_up_logs_the_new_user_in(monkeypatch: pytest.MonkeyPatch, api_url: str) -> None:
    app = page(monkeypatch, api_url)
    email = f"new-{free_port()}@example.com"
    app.text_input(key="signup-name").input("Ada Lovelace")
    app.text_input(key="signup-email").input(email)
    app.text_input(key="signup-password").input(PASSWORD)
    app.button[1].click()
    app.run()
    assert not app.exception
    assert app.session_state[session.USER].email == email
    assert "Signed in as **Ada Lovelace**" in texts(app)


def test_signing_up_with_a_taken_email_says_to_log_in(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app = page(monkeypatch, api_url)
    app.text_input(key="signup-name").input("Ada Lovelace")
    app.text_input(key="signup-email").input(account.email)
    app.text_input(key="signup-password").input(PASSWORD)
    app.button[1].click()
    app.run()
    assert not app.exception
    assert [e.value for e in app.error] == [
        "An account with this email already exists; log in instead."
    ]


def test_a_name_too_long_is_kept_and_said_to_be_too_long(
    monkeypatch: pytest.MonkeyPatch, api_url: str
) -> None:
    """A field's own limit threw away a longer name pasted into it, then asked for one."""
    app = page(monkeypatch, api_url)
    app.text_input(key="signup-name").input("A" * 52)
    app.text_input(key="signup-email").input(f"long-{free_port()}@example.com")
    app.text_input(key="signup-password").input(PASSWORD)
    app.button[1].click()
    app.run()
    assert not app.exception
    assert app.text_input(key="signup-name").value == "A" * 52
    assert "Your name is 52 characters; at most 50 fit." in texts(app)
    assert session.USER not in app.session_state


def test_an_email_with_a_one_letter_top_level_domain_is_a_typo_said_on_the_page(
    monkeypatch: pytest.MonkeyPatch, api_url: str
) -> None:
    """The API refuses ann@example.c; the page said so in the API's words (``body.email: ...``)."""
    app = page(monkeypatch, api_url)
    app.text_input(key="signup-name").input("Ann")
    app.text_input(key="signup-email").input("ann@example.c")
    app.text_input(key="signup-password").input(PASSWORD)
    app.button[1].click()
    app.run()
    assert not app.exception
    assert [e.value for e in app.error] == ["Enter a valid email address, like name@example.com."]
    assert session.USER not in app.session_state


def test_classifying_shows_the_class_its_score_and_the_top_5(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    classify_dog(app)
    said = texts(app)
    assert "### Eskimo dog" in said
    assert "**62.2%** sure" in said
    assert "Answered by `efficientnet-lite0@" in said
    charts = app.get("vega_lite_chart")
    assert len(charts) == 1


def test_an_unsure_answer_says_so_and_names_the_candidates(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    red = io.BytesIO()
    Image.new("RGB", (1, 1), (255, 0, 0)).save(red, format="PNG")
    app = logged_in_page(monkeypatch, api_url, account)
    add_files(app, ("red.png", red.getvalue(), "image/png"))
    said = texts(app)
    assert "Not sure" in said
    assert re.search(r"### Maybe [^\n]+, [^\n]+ or [^\n]+", said), said
    assert "Most likely" not in said
    # In the grid (a second picture), its tile says how unsure too.
    add_files(app, ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg"))
    tiles = texts(app)
    assert re.search(r"\*\*Not sure — maybe [^*]+\*\*  \nAt most \d+\.\d% sure, by", tiles), tiles
    assert "**Eskimo dog**  \n62.2% sure" in tiles


def test_a_file_that_is_not_an_image_gets_an_error_card_in_the_grid(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    add_files(
        app,
        ("notes.png", b"not an image at all", "image/png"),
        ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg"),
    )
    assert [error.value for error in app.error] == [f"**notes\\.png**: {NOT_AN_IMAGE}"]
    assert "**Eskimo dog**  \n62.2% sure" in texts(app)


def test_the_tab_keeps_no_megabytes_of_what_is_not_an_image(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    """15 MB of noise named .png, three times: the page said "not an image" and kept all of
    it, twice over in the UI server's memory, never charged to any quota."""
    app = logged_in_page(monkeypatch, api_url, account)
    for n in range(3):
        add_files(app, (f"junk{n}.png", os.urandom(15 * 2**20), "image/png"))
    kept = app.session_state[session.IMAGES]
    assert len(kept) == 3
    assert all(len(result.upload.data) <= 1024 for result in kept.values())
    assert len(app.error) == 3


def test_feedback_is_sent_with_the_prediction_id(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account, api: ApiForTests
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    classify_dog(app)
    prediction_id = only_prediction_id(app)
    key = f"fb-{prediction_id}"
    app.radio(key=f"{key}-correct").set_value("No")
    app.run()
    right_class = app.selectbox(key=f"{key}-class")
    # Classes only: a box that takes free text offers "Add: Siberian" above Siberian husky,
    # and Enter on a partly typed name saved the part.
    assert not right_class.proto.accept_new_options
    right_class.set_value("Siberian_husky")
    app.text_area(key=f"{key}-comment").input("Blue eyes.")
    app.button(key=f"{key}-send").click()
    app.run()
    assert not app.exception
    assert [s.value for s in app.success] == [FEEDBACK_SAVED]
    # What was saved, in words, where the form was.
    said = escape_markdown("Wrong. Right class: Siberian husky. Blue eyes.")
    assert f"You said: {said}" in texts(app)

    history = api.history(account.token)
    assert isinstance(history, History)
    assert history.feedback[0].prediction_id == prediction_id
    assert history.feedback[0].feedback == "Wrong. Right class: Siberian_husky. Blue eyes."
    assert history.feedback[0].predicted_class == "Eskimo_dog"
    # The History table: the mark under "You", then only what it does not say (the whole
    # sentence did not fit its column).
    app.session_state["view"] = "History"
    app.run()
    (table,) = (frame.value for frame in app.dataframe)
    row = table.iloc[0]
    assert (row["You"], row["Your feedback"]) == ("✗", "→ Siberian husky. Blue eyes.")


def said_no_to_the_dog(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> tuple[AppTest, str]:
    """A logged-in page with the dog classified and "No" chosen in its form, not sent; the
    form's key."""
    app = logged_in_page(monkeypatch, api_url, account)
    classify_dog(app)
    key = f"fb-{only_prediction_id(app)}"
    app.radio(key=f"{key}-correct").set_value("No")
    app.run()
    return app, key


def test_unsent_feedback_is_still_there_after_a_reload(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account, api: ApiForTests
) -> None:
    """A reload is a new tab state: the form a person was filling in came back empty."""
    app, key = said_no_to_the_dog(monkeypatch, api_url, account)
    app.selectbox(key=f"{key}-class").set_value("Siberian_husky")
    app.text_area(key=f"{key}-comment").input("Blue eyes.")
    app.run()

    reloaded = page(monkeypatch, api_url)
    log_in(reloaded, account.email, account.password)

    assert reloaded.radio(key=f"{key}-correct").value == "No"
    assert reloaded.selectbox(key=f"{key}-class").value == "Siberian_husky"
    assert reloaded.text_area(key=f"{key}-comment").value == "Blue eyes."
    reloaded.button(key=f"{key}-send").click()
    reloaded.run()
    assert [s.value for s in reloaded.success] == [FEEDBACK_SAVED]
    # Sent, then reloaded again: the card says it was sent, with no warning of the page's.
    again = page(monkeypatch, api_url)
    log_in(again, account.email, account.password)
    assert not again.warning
    assert FEEDBACK_SAVED in texts(again)
    history = api.history(account.token)
    assert isinstance(history, History)
    assert history.feedback[0].feedback == "Wrong. Right class: Siberian_husky. Blue eyes."


def test_a_reload_brings_back_no_draft_of_an_image_cleared_from_the_tab(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app, key = said_no_to_the_dog(monkeypatch, api_url, account)
    app.button(key="clear-all-yes").click()
    app.run()
    assert not app.exception

    reloaded = page(monkeypatch, api_url)
    log_in(reloaded, account.email, account.password)

    assert f"{key}-correct" not in reloaded.session_state
    assert reloaded.session_state[session.IMAGES] == {}


def test_a_note_too_long_is_kept_and_not_sent(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account, api: ApiForTests
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    classify_dog(app)
    key = f"fb-{only_prediction_id(app)}"
    app.radio(key=f"{key}-correct").set_value("Yes")
    app.run()
    app.text_area(key=f"{key}-comment").input("x" * 1200)
    app.button(key=f"{key}-send").click()
    app.run()
    assert not app.exception
    assert [e.value for e in app.error] == [
        "Your note is 1,200 characters; at most 1,000 fit. Shorten it and send again."
    ]
    assert app.text_area(key=f"{key}-comment").value == "x" * 1200
    # Said under the note; Send again sends nothing while it is too long.
    app.button(key=f"{key}-send").click()
    app.run()
    assert len(app.error) == 1
    history = api.history(account.token)
    assert isinstance(history, History)
    assert history.feedback == []
    # Shortened, then one click on Send, which is when the browser commits the box: sent.
    # (A Send disabled until the box committed dropped that click: it took two.)
    app.text_area(key=f"{key}-comment").input("x" * 1000)
    app.button(key=f"{key}-send").click()
    app.run()
    assert not app.error
    history = api.history(account.token)
    assert isinstance(history, History)
    assert [f.feedback for f in history.feedback] == ["Correct. " + "x" * 1000]


def test_history_lists_predictions_and_feedback(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    app.session_state["view"] = "History"
    app.run()
    assert "No predictions yet" in texts(app)
    classify_dog(app)
    prediction_id = only_prediction_id(app)
    app.radio(key=f"fb-{prediction_id}-correct").set_value("Yes")
    app.run()
    app.button(key=f"fb-{prediction_id}-send").click()
    app.run()
    app.session_state["view"] = "History"
    app.run()
    (table,) = (frame.value for frame in app.dataframe)
    row = table.iloc[0]
    assert (row["File"], row["Answer"], row["Score"]) == ("dog.jpeg", "Eskimo dog", "62.2%")
    assert (row["You"], row["Your feedback"]) == ("✓", "")  # "You" says it
    assert row["Image"].startswith("data:image/jpeg;base64,")
    # The answer, its score and what was said of it first: what a phone's width shows.
    assert list(table.columns)[:4] == ["Image", "Answer", "Score", "You"]
    assert "Page 1 of 1 · 1 prediction" in texts(app)
    # The Classify tab kept its answer while History was open.
    assert "### Eskimo dog" in texts(app)


def test_adding_the_same_file_again_makes_no_new_prediction(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account, api: ApiForTests
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    classify_dog(app)
    add_files(app, ("dog-copy.jpeg", DOG_JPEG.read_bytes(), "image/jpeg"))
    assert len(app.session_state[session.IMAGES]) == 1
    page = api.history_page(account.token, 10, 0)
    assert not isinstance(page, ApiError)
    assert page.total == 1


def test_feedback_sent_after_the_login_ended_is_sent_after_logging_in_again(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account, api: ApiForTests
) -> None:
    from imgclf.api.security import create_access_token
    from imgclf.settings import Settings

    app = logged_in_page(monkeypatch, api_url, account)
    classify_dog(app)
    prediction_id = only_prediction_id(app)
    key = f"fb-{prediction_id}"
    app.radio(key=f"{key}-correct").set_value("No")
    app.run()
    app.text_area(key=f"{key}-comment").input("A husky, surely.")
    # The token runs out while the user types, and there is no login left to renew it.
    app.session_state[session.TOKEN] = create_access_token(
        account.user.id, Settings(), now=datetime.now(UTC) - timedelta(hours=1)
    )
    app.button(key=f"{key}-send").click()
    app.run()
    assert [info.value for info in app.info] == [KEPT_NOTICE]
    log_in(app, account.email, PASSWORD)
    assert [s.value for s in app.success] == [FEEDBACK_SAVED]
    history = api.history(account.token)
    assert isinstance(history, History)
    assert history.feedback[0].feedback == "Wrong. A husky, surely."
    assert history.feedback[0].prediction_id == prediction_id


def test_an_expired_token_sends_the_user_back_to_log_in(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    from imgclf.api.security import create_access_token
    from imgclf.settings import Settings

    app = logged_in_page(monkeypatch, api_url, account)
    app.session_state[session.TOKEN] = create_access_token(
        account.user.id, Settings(), now=datetime.now(UTC) - timedelta(hours=1)
    )
    classify_dog(app)
    assert session.TOKEN not in app.session_state
    assert [info.value for info in app.info] == [EXPIRED_NOTICE]
    assert app.text_input(key="login-email")


def test_log_out_forgets_the_user(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    classify_dog(app)
    next(button for button in app.button if button.label == "Log out").click()
    app.run()
    assert session.TOKEN not in app.session_state
    assert session.IMAGES not in app.session_state
    assert app.text_input(key="login-email").value == ""


def test_history_pages_through_more_than_a_page_with_the_total(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account, api: ApiForTests
) -> None:
    for n in range(PAGE_SIZE + 1):
        assert not isinstance(
            api.predict(account.token, f"dog-{n}.jpeg", DOG_JPEG.read_bytes()), ApiError
        )
    app = logged_in_page(monkeypatch, api_url, account)
    app.session_state["view"] = "History"
    app.run()
    assert f"Page 1 of 2 · {PAGE_SIZE + 1} predictions" in texts(app)
    (table,) = (frame.value for frame in app.dataframe)
    assert list(table["File"])[:2] == [f"dog-{PAGE_SIZE}.jpeg", f"dog-{PAGE_SIZE - 1}.jpeg"]
    app.button(key="history-older").click()
    app.run()
    assert f"Page 2 of 2 · {PAGE_SIZE + 1} predictions" in texts(app)
    (table,) = (frame.value for frame in app.dataframe)
    assert list(table["File"]) == ["dog-0.jpeg"]
    assert app.button(key="history-older").disabled


def test_a_logout_in_one_tab_ends_the_others_and_their_images_stay_gone(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    """Two tabs of one login: the one still open used to go on classifying for the rest of
    its access token's life, and put the images the logout had dropped back for the next
    log-in anywhere. Now its next run goes to the login page, and it puts nothing back (it
    keeps its own work for its user's next log-in in that tab, as when a login expires)."""
    first = logged_in_page(monkeypatch, api_url, account)
    classify_dog(first)
    second = logged_in_page(monkeypatch, api_url, account)
    assert SHELF.get(account.user.id) is not None  # the dog, for the user's other tabs

    next(button for button in second.button if button.label == "Log out").click().run()
    assert SHELF.get(account.user.id) is None
    first.run()

    assert not first.exception
    assert first.text_input(key="login-email").label == "Email"
    assert LOGGED_OUT_KEPT_NOTICE in texts(first)
    assert SHELF.get(account.user.id) is None


def test_the_answers_csv_keeps_prediction_ids_whole_beside_refusals() -> None:
    answered = Prediction(
        prediction="Eskimo_dog",
        score=0.6222,
        image_file_name="0a1b2c.jpg",
        top_k=[],
        prediction_id=7,
        model="efficientnet-lite0@1",
        cached=False,
    )
    results = [
        ImageResult(Upload("dog.jpg", b"..."), answered),
        ImageResult(Upload("notes.jpg", b"..."), ApiError("File type is not supported.", 400)),
    ]
    lines = answers_csv(results).splitlines()
    assert lines[0] == "file,prediction,score,answer,top_5,model,prediction_id,error"
    assert lines[1].endswith(",efficientnet-lite0@1,7,")
    assert lines[2] == "notes.jpg,,,,,,,File type is not supported."
