"""The feedback quota: a user's notes, counted in UTF-8 bytes as they are written, replaced and
swept, refused with 507 past ``IMGCLF_USER_FEEDBACK_QUOTA_MB``. A note may hold 2,000
characters and a user 100,000 predictions with a note each: 800 MB of the database for one
account, without it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from imgclf.api.feedback.service import note_bytes
from imgclf.api.state import app_state
from imgclf.db.models import Feedback, User
from imgclf.settings import Settings

from .conftest import Caller
from .test_feedback import add_prediction

NOTE = "\U0001f600" * 2000  # the longest note allowed, 8,000 bytes


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        user_feedback_quota_mb=1,
        metrics_token="scraper-token",  # type: ignore[arg-type]
    )


def note(client: TestClient, caller: Caller, prediction_id: int, text: str) -> Response:
    feedback = {"prediction_id": prediction_id, "feedback": text}
    return client.post("/feedback/", json=feedback, headers=caller.headers)


def feedback_bytes(app: FastAPI, user_id: int) -> int:
    with app_state(app).database.transaction(writes=False) as session:
        return session.get_one(User, user_id).feedback_bytes


def stored_note_bytes(app: FastAPI, user_id: int) -> int:
    with app_state(app).database.transaction(writes=False) as session:
        notes = session.scalars(select(Feedback.feedback).where(Feedback.user_id == user_id))
        return sum(note_bytes(text) for text in notes)


def test_notes_are_bounded_per_user_and_a_shorter_note_gives_room_back(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice, bob = make_user(), make_user()
    fits = 2**20 // len(NOTE.encode())  # 131
    ids = [add_prediction(app, alice.id) for _ in range(fits + 1)]
    assert [note(client, alice, pid, NOTE).status_code for pid in ids[:fits]] == [201] * fits

    refused = note(client, alice, ids[fits], NOTE)
    assert refused.status_code == 507
    assert refused.json()["detail"].startswith(
        "Your feedback notes are full: this note needs 7.8 KB more than the 0.6 KB left of "
        "your 1 MB."
    )
    assert (
        client.get("/feedback/", params={"limit": 100}, headers=alice.headers).json()[0][
            "prediction_id"
        ]
        == ids[fits - 1]
    )  # the refused note was not stored
    assert feedback_bytes(app, alice.id) == fits * 8000
    # Counted apart from the service's own failures, which page whoever runs it.
    scrape = client.get("/metrics", headers={"Authorization": "Bearer scraper-token"}).text
    assert 'imgclf_quota_refusals_total{quota="feedback"} 1.0' in scrape

    # A short note still fits, and a long one replaced by a short one gives its room back.
    assert note(client, alice, ids[fits], "Right.").status_code == 201
    assert note(client, alice, ids[0], "ok").status_code == 201
    assert note(client, alice, ids[fits], NOTE).status_code == 201
    assert feedback_bytes(app, alice.id) == fits * 8000 + len("ok")

    # Each user has a quota of their own.
    assert note(client, bob, add_prediction(app, bob.id), NOTE).status_code == 201
    assert feedback_bytes(app, bob.id) == 8000


def test_notes_sent_at_once_are_counted_one_after_the_other(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    """Two notes of one user at the same moment must not both read the room left before the
    other took it. With room for one more long note, 30 sent at once: one is taken. Then long
    and short notes replacing each other on the same predictions, all at once: the total kept
    is what the stored notes add up to."""
    alice = make_user()
    ids = [add_prediction(app, alice.id) for _ in range(160)]
    fits = 2**20 // len(NOTE.encode())  # 131
    for pid in ids[: fits - 1]:
        assert note(client, alice, pid, NOTE).status_code == 201

    def send(sent: tuple[int, str]) -> int:
        return note(client, alice, *sent).status_code

    with ThreadPoolExecutor(30) as pool:
        last_room = Counter(pool.map(send, [(pid, NOTE) for pid in ids[fits - 1 : fits + 29]]))
    assert last_room == {201: 1, 507: 29}
    assert feedback_bytes(app, alice.id) == fits * len(NOTE.encode())

    replacing = [(pid, text) for pid in ids[:20] for text in ("short", NOTE, "a bit longer")]
    with ThreadPoolExecutor(60) as pool:
        statuses = Counter(pool.map(send, replacing))
    assert set(statuses) <= {201, 507}, statuses
    kept = feedback_bytes(app, alice.id)
    assert kept == stored_note_bytes(app, alice.id)
    assert kept <= 2**20
