"""The Classify tab's model picker, with AppTest against the live API serving two models."""

from __future__ import annotations

import pytest

from imgclf.ui.client import Model
from imgclf.ui.model_picker import CHOICE, describe, details
from tests.ui.conftest import Account
from tests.ui.test_app import classify_dog, log_in, logged_in_page, page, texts
from tests.ui_api import ApiForTests


def test_the_picker_lists_the_models_in_words_with_the_default_chosen(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    picker = app.radio(key=CHOICE)
    assert picker.value == "efficientnet-lite0"  # the API's default
    said = picker.options  # as the page shows them
    assert len(said) == 2
    # Both networks take 224 px; the INT8 one is the faster, the FP32 one the more accurate.
    assert said == [
        "Default · Most accurate — standard speed, 75.1% right on ImageNet",
        "Fast — about 2.1x the speed, 74.4% right on ImageNet",
    ]
    # Which network each is, under it, for those who know them.
    captions = list(picker.proto.captions)
    assert captions[0].startswith("efficientnet-lite0@")
    assert captions[0].endswith(", FP32, 224 px")
    assert captions[1] == "second-model@1, INT8, 224 px"


def test_the_picked_model_answers_and_is_named_on_the_card_and_remembered(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    app.radio(key=CHOICE).set_value("second-model").run()
    classify_dog(app)
    assert "Answered by `second-model@1`" in texts(app)
    assert app.radio(key=CHOICE).value == "second-model"  # still chosen after the answer
    # The same photo for the other model is a new question, answered by it.
    app.radio(key=CHOICE).set_value("efficientnet-lite0").run()
    classify_dog(app)
    assert "by `efficientnet-lite0@" in texts(app)
    assert "by `second-model@1`" in texts(app)


def test_the_picked_model_is_still_picked_after_a_reload(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    """A reload is a new tab state: it found the picker back on the default while the
    answers stayed, so the next picture silently went to another model."""
    app = logged_in_page(monkeypatch, api_url, account)
    app.radio(key=CHOICE).set_value("second-model").run()
    reloaded = page(monkeypatch, api_url)
    log_in(reloaded, account.email, account.password)
    assert reloaded.radio(key=CHOICE).value == "second-model"


def test_history_names_the_model_version_that_answered(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    app.radio(key=CHOICE).set_value("second-model").run()
    classify_dog(app)
    app.session_state["view"] = "History"
    app.run()
    (table,) = app.dataframe
    assert list(table.value["Model"]) == ["second-model@1"]


def test_a_speed_is_said_from_the_input_size_and_precision(
    api: ApiForTests, account: Account
) -> None:
    models = api.models(account.token)
    assert isinstance(models, list)
    default = next(m for m in models if m.default)
    bigger = Model.model_validate(
        default.model_dump() | {"name": "big", "live": "big@1", "input_size": 260, "default": False}
    )
    bigger = bigger.model_copy(update={"accuracy": 0.776})
    line = describe(bigger, [default, bigger])
    assert line.startswith("Most accurate — about half the speed, 77.6% right on ImageNet")
    assert details(bigger) == "big@1, FP32, 260 px"
