"""Many writers at once: none fails, on SQLite (one writer at a time) and on PostgreSQL.

A write that waited for a free worker thread between its INSERT and its COMMIT kept SQLite's
write lock while the other writers, holding every thread, waited for that lock: answers were
'database is locked' after the busy timeout.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from fastapi.testclient import TestClient

from .conftest import Caller
from .test_feedback import add_prediction

FEEDBACK = {
    "feedback": "right",
    "score": 0.9,
    "predicted_class": "Eskimo_dog",
    "image_file_name": "0a1b2c.jpg",
}
WRITERS = 80  # well past the 40 worker threads FastAPI runs sync code in


def test_many_concurrent_writes_all_succeed(
    client: TestClient, app: FastAPI, make_user: Callable[..., Caller]
) -> None:
    alice = make_user()
    predictions = [add_prediction(app, alice.id) for _ in range(WRITERS)]

    def post(prediction_id: int) -> int:
        body = {**FEEDBACK, "prediction_id": prediction_id}
        return client.post("/feedback/", json=body, headers=alice.headers).status_code

    with ThreadPoolExecutor(WRITERS) as pool:
        statuses = Counter(pool.map(post, predictions))
    assert statuses == {201: WRITERS}
    listed = client.get("/feedback/?limit=100", headers=alice.headers).json()
    assert len(listed) == WRITERS
