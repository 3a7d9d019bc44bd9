"""The API client against a live API: typed answers, the API's own messages, never a raise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from imgclf.localservers import free_port
from imgclf.ui.client import ApiError, Prediction, User
from tests.conftest import DOG_JPEG
from tests.ui.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, Account
from tests.ui_api import ApiForTests, History


def test_login_with_the_right_password_gives_a_token(api: ApiForTests) -> None:
    token = api.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert isinstance(token, str)
    me = api.me(token)
    assert isinstance(me, User), me
    assert (me.name, me.email) == ("Admin", ADMIN_EMAIL)


def test_login_with_a_wrong_password_says_so(api: ApiForTests, account: Account) -> None:
    answer = api.login(account.email, PASSWORD + "-wrong")
    assert answer == ApiError("Incorrect email or password", 401)


def test_sign_up_twice_with_one_email_is_refused(api: ApiForTests, account: Account) -> None:
    answer = api.sign_up("Someone Else", account.email, PASSWORD)
    assert answer == ApiError("The user with this email already exists", 400)


def test_predict_names_the_dog(api: ApiForTests, account: Account) -> None:
    answer = api.predict(account.token, "dog.jpeg", DOG_JPEG.read_bytes())
    assert isinstance(answer, Prediction), answer
    assert answer.prediction == "Eskimo_dog"
    assert answer.top_k[0].label == "Eskimo_dog"
    assert len(answer.top_k) == 5
    assert answer.image_file_name.endswith(".jpeg")


def test_predict_passes_on_the_refusal_of_a_file_that_is_no_image(
    api: ApiForTests, account: Account
) -> None:
    answer = api.predict(account.token, "notes.png", b"these are not pixels")
    assert isinstance(answer, ApiError)
    assert answer.status == 400
    assert answer.message == "File type is not supported."


def test_feedback_is_stored_and_shows_in_history(api: ApiForTests, account: Account) -> None:
    prediction = api.predict(account.token, "dog.jpeg", DOG_JPEG.read_bytes())
    assert isinstance(prediction, Prediction), prediction
    stored = api.send_feedback(
        account.token,
        "Correct. A fine husky-like dog.",
        score=prediction.score,
        predicted_class=prediction.prediction,
        image_file_name=prediction.image_file_name,
        prediction_id=prediction.prediction_id,
    )
    assert not isinstance(stored, ApiError), stored
    assert stored.prediction_id == prediction.prediction_id

    history = api.history(account.token)
    assert isinstance(history, History), history
    assert history.predictions[0].id == prediction.prediction_id
    assert history.predictions[0].label == "Eskimo_dog"
    assert history.feedback[0].feedback == "Correct. A fine husky-like dog."
    assert history.feedback[0].prediction_id == prediction.prediction_id


def test_an_expired_token_is_unauthorized(api: ApiForTests) -> None:
    from imgclf.api.security import create_access_token
    from imgclf.settings import Settings

    expired = create_access_token(1, Settings(), now=datetime.now(UTC) - timedelta(hours=2))
    for answer in (api.me(expired), api.history(expired), api.predict(expired, "a.jpg", b"x")):
        assert isinstance(answer, ApiError)
        assert answer.unauthorized
        assert answer.message == "Could not validate credentials"


def test_a_server_that_is_down_is_a_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = ApiForTests(url)
    # The address goes to the log; the page's visitors only learn that the service is down.
    expected = ApiError("The service cannot be reached right now; try again in a minute.")
    assert client.login(ADMIN_EMAIL, ADMIN_PASSWORD) == expected
    assert client.predict("token", "dog.jpeg", DOG_JPEG.read_bytes()) == expected
    assert client.history("token") == expected
