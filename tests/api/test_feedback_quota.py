"""The feedback quota: a user's notes, counted in UTF-8 bytes as they are written, replaced and
swept, refused with 507 past ``IMGCLF_USER_FEEDBACK_QUOTA_MB``. A note may hold 2,000
characters and a user 100,000 predictions with a note each: 800 MB of the database for one
account, without it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from imgclf.api.state import app_state
from imgclf.db.models import User
from imgclf.settings import Settings

from .conftest import Caller
from .test_feedback import add_prediction

NOTE = "\U0001f600" * 2000  # the longest note allowed, 8,000 bytes


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, user_feedback_quota_mb=1)


def note(client: TestClient, caller: Caller, prediction_id: int, text: str) -> Response:
    feedback = {"prediction_id": prediction_id, "feedback": text}
    return client.post("/feedback/", json=feedback, headers=caller.headers)


def feedback_bytes(app: FastAPI, user_id: int) -> int:
    with app_state(app).database.transaction(writes=False) as session:
        return session.get_one(User, user_id).feedback_bytes


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

    # A short note still fits, and a long one replaced by a short one gives its room back.
    assert note(client, alice, ids[fits], "Right.").status_code == 201
    assert note(client, alice, ids[0], "ok").status_code == 201
    assert note(client, alice, ids[fits], NOTE).status_code == 201
    assert feedback_bytes(app, alice.id) == fits * 8000 + len("ok")

    # Each user has a quota of their own.
    assert note(client, bob, add_prediction(app, bob.id), NOTE).status_code == 201
    assert feedback_bytes(app, bob.id) == 8000
