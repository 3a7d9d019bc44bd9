"""The admin page with AppTest against the live API: admins only, the version swap after a
confirmation, and quality figures from feedback the test gives."""

from __future__ import annotations

import pytest
import requests
from streamlit.testing.v1 import AppTest

from imgclf.ui.app import ADMIN
from imgclf.ui.client import ApiClient, Prediction
from tests.conftest import DOG_JPEG
from tests.ui.conftest import Account
from tests.ui.test_app import logged_in_page, texts
from tests.ui_api import ApiForTests


def open_admin(app: AppTest) -> None:
    app.session_state["view"] = ADMIN
    app.run()
    assert not app.exception


def chart_specs(app: AppTest) -> list[str]:
    """Each Altair chart on the page: its spec and data, as text."""
    charts = app.get("vega_lite_chart")
    return [str(chart.proto) for chart in charts]


def give_feedback(api_url: str, account: Account, model: str, correct: bool) -> Prediction:
    """A prediction of the dog by ``model``, then its user's verdict on it."""
    prediction = ApiClient(api_url).predict(account.token, "dog.jpeg", DOG_JPEG.read_bytes(), model)
    assert isinstance(prediction, Prediction), prediction
    body = {
        "feedback": "right" if correct else "wrong",
        "score": prediction.score,
        "predicted_class": prediction.prediction,
        "image_file_name": prediction.image_file_name,
        "prediction_id": prediction.prediction_id,
        "correct": correct,
        "correct_class": None if correct else "Siberian_husky",
    }
    headers = {"Authorization": f"Bearer {account.token}"}
    sent = requests.post(f"{api_url}/feedback/", json=body, headers=headers, timeout=10)
    assert sent.status_code == 201, sent.text
    return prediction


def test_a_regular_user_gets_no_admin_tab_and_the_api_refuses_them(
    monkeypatch: pytest.MonkeyPatch, api: ApiForTests, api_url: str, account: Account
) -> None:
    app = logged_in_page(monkeypatch, api_url, account)
    assert [tab.label for tab in app.tabs] == ["Classify", "History"]
    assert "Most corrected" not in texts(app)
    # The page hides it; the API refuses it whatever a page does.
    assert api.quality(account.token).status == 403  # type: ignore[union-attr]
    assert api.make_live(account.token, "efficientnet-lite0", 1).status == 403  # type: ignore[union-attr]


def test_the_admin_sees_models_quality_and_most_corrected_classes(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account, admin: Account
) -> None:
    give_feedback(api_url, account, "second-model", correct=True)
    give_feedback(api_url, account, "second-model", correct=False)
    app = logged_in_page(monkeypatch, api_url, admin)
    assert [tab.label for tab in app.tabs] == ["Classify", "History", ADMIN]
    open_admin(app)
    models = app.dataframe[0].value
    assert list(models["Model"]) == ["efficientnet-lite0", "second-model"]
    assert list(models["ImageNet top-1"]) == ["75.1%", "74.4%"]
    (quality, *shadow) = chart_specs(app)
    assert "second-model@1" in quality
    assert all(verdict in quality for verdict in ("right", "wrong", "unmarked"))
    corrected = app.dataframe[1].value  # the models come first
    wrong_dogs = corrected[corrected["Version"] == "second-model@1"]
    assert "Eskimo dog" in list(wrong_dogs["Answered"])  # in words, as every page names them
    assert "Siberian husky (" in " ".join(wrong_dogs["Users said"])
    # This API has no shadow route: the page says so.
    assert "efficientnet-lite0: no shadow comparison is set." in texts(app)
    assert not shadow


def test_a_version_is_made_live_only_after_a_confirmation(
    monkeypatch: pytest.MonkeyPatch, api: ApiForTests, api_url: str, admin: Account
) -> None:
    live = {m.name: m.live_version for m in api.models(admin.token)}  # type: ignore[union-attr]
    before = live["efficientnet-lite0"]
    other = 2 if before == 1 else 1
    app = logged_in_page(monkeypatch, api_url, admin)
    open_admin(app)
    app.selectbox(key="admin-swap-model").select("efficientnet-lite0").run()
    app.selectbox(key="admin-swap-version").select(other).run()
    app.button(key="admin-swap-ask").click().run()
    assert f"from version {before} to {other}?" in texts(app)
    app.button(key="admin-confirm-no").click().run()
    assert [m.live_version for m in api.models(admin.token) if m.default] == [before]  # type: ignore[union-attr]
    try:
        app.selectbox(key="admin-swap-version").select(other).run()
        app.button(key="admin-swap-ask").click().run()
        app.button(key="admin-confirm-yes").click().run()
        assert not app.exception
        assert f"efficientnet-lite0@{other} is live." in texts(app)
        assert app.dataframe[0].value["Live"][0] == f"efficientnet-lite0@{other}"
    finally:  # back as it was, for the other tests
        assert api.make_live(admin.token, "efficientnet-lite0", before).live_version == before  # type: ignore[union-attr]
