"""The admins' quality window at the edges of the calendar, against ``imgclf serve``."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support import ServedApi

EDGES = (
    "until=0001-01-05T00:00:00Z&days=10",  # ten days before the first representable one
    "until=9999-12-31T23:59:59-05:00",  # in UTC, the year 10000
    "since=0001-01-01T00:00:00%2B05:00",  # in UTC, the year 0
)


def test_a_window_past_the_calendar_is_refused_not_a_crash(model_dir: Path, tmp_path: Path) -> None:
    """Each of these answered 500 (an OverflowError, and for one a reset connection)."""
    with (
        ServedApi(
            tmp_path / "api.log", tmp_path / "data", model_dir=model_dir, model_threads=1
        ) as api,
        httpx.Client(base_url=api.url, timeout=30) as client,
    ):
        login = client.post("/login", data={"username": "admin@example.com", "password": "admin"})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for query in EDGES:
            answer = client.get(f"/models/quality?{query}", headers=headers)
            assert (query, answer.status_code) == (query, 422)
            assert "within the years 1 to 9999" in answer.json()["detail"]
        assert client.get("/models/quality?days=3650", headers=headers).status_code == 200
    assert "OverflowError" not in api.output()
