"""The migrations that bring data along, on SQLite and PostgreSQL: revision 0003 links older
feedback to its prediction by image and user, its verdict read from the UI's wording, one per
prediction; revision 0006 gives each user the running total the storage quota reads, from the
history it summed until then."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, text

from imgclf.db.engine import make_engine
from imgclf.db.migrate import alembic_config, upgrade
from imgclf.settings import Settings

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(Settings(database_url=database_url))
    yield engine
    engine.dispose()


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_older_feedback_is_linked_and_its_verdict_read(engine: Engine) -> None:
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0002")
        connection.execute(
            text(
                "INSERT INTO users (id, name, email, hashed_password, is_admin, created_at) "
                "VALUES (1, 'Ada', 'ada@example.com', 'x', false, :t), "
                "(2, 'Bo', 'bo@example.com', 'x', false, :t)"
            ),
            {"t": at(0)},
        )
        predictions = [
            (1, 1, "a.jpg", at(1)),
            (2, 1, "a.jpg", at(5)),  # Ada's newest of a.jpg, before her feedback
            (3, 1, "a.jpg", at(30)),  # after it: not the one she spoke of
            (4, 2, "b.jpg", at(1)),
            (5, 1, "c.jpg", at(1)),
        ]
        for pid, user, image, created in predictions:
            connection.execute(
                text(
                    "INSERT INTO predictions (id, user_id, image_file_name, label, score, top_k, "
                    "model_id, latency_ms, cached, created_at) VALUES (:id, :user, :image, "
                    "'Eskimo_dog', 0.6, '[]', 'm@1', 1.0, false, :t)"
                ),
                {"id": pid, "user": user, "image": image, "t": created},
            )
        feedbacks = [
            (1, 1, None, "a.jpg", "Wrong. Right class: malamute. It has brown eyes.", at(10)),
            (2, 1, None, "b.jpg", "Correct.", at(10)),  # Bo's image: stays unlinked
            (3, 1, 5, "c.jpg", "Correct.", at(10)),
            (4, 1, 5, "c.jpg", "Wrong. Right class: crane.", at(11)),  # the newest for 5
            (5, 2, None, "b.jpg", "nice dog", at(10)),
        ]
        for fid, user, pid, image, said, created in feedbacks:
            connection.execute(
                text(
                    "INSERT INTO feedbacks (id, user_id, prediction_id, score, predicted_class, "
                    "image_file_name, feedback, created_at) VALUES (:id, :user, :pid, 0.6, "
                    "'Eskimo_dog', :image, :said, :t)"
                ),
                {"id": fid, "user": user, "pid": pid, "image": image, "said": said, "t": created},
            )

    upgrade(engine)

    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, prediction_id, correct, correct_class FROM feedbacks ORDER BY id")
        ).all()
    assert [(r[0], r[1], None if r[2] is None else bool(r[2]), r[3]) for r in rows] == [
        (1, 2, False, "malamute"),
        (2, None, True, None),
        (3, None, True, None),  # replaced by 4, kept unlinked
        (4, 5, False, "crane"),
        (5, 4, None, None),
    ]


def test_downgrade_to_0002_and_back(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0002")
    upgrade(engine)


def test_each_users_total_is_their_distinct_files(engine: Engine) -> None:
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0005_shadow")
        for user_id in (1, 2, 3):
            connection.execute(
                text(
                    "INSERT INTO users (id, name, email, hashed_password, is_admin, created_at) "
                    "VALUES (:id, 'Someone', :email, 'x', false, :t)"
                ),
                {"id": user_id, "email": f"user{user_id}@example.com", "t": T0},
            )
        predictions = [
            (1, "a.jpg", 1000),
            (1, "a.jpg", 1000),  # the same file again: counted once
            (1, "b.png", 250),
            (1, "old.jpg", 0),  # from before sizes were recorded
            (2, "a.jpg", 1000),  # another user's copy counts for them
        ]
        for user_id, name, size in predictions:
            connection.execute(
                text(
                    "INSERT INTO predictions (user_id, image_file_name, image_bytes, label, "
                    "score, top_k, model_id, latency_ms, cached, created_at) VALUES "
                    "(:user_id, :name, :size, 'x', 0.5, '[]', 'm@1', 1.0, false, :t)"
                ),
                {"user_id": user_id, "name": name, "size": size, "t": T0},
            )

    upgrade(engine)

    with engine.connect() as connection:
        totals = connection.execute(text("SELECT id, storage_bytes FROM users ORDER BY id")).all()
    assert [tuple(row) for row in totals] == [(1, 1250), (2, 1000), (3, 0)]

    # Back to 0003 with the data in place: the columns go, nothing else (a batch operation on
    # SQLite drops the old table, and with foreign keys on, what refers to its rows).
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO feedbacks (user_id, prediction_id, score, predicted_class, "
                "image_file_name, feedback, created_at) "
                "VALUES (1, 1, 0.5, 'x', 'a.jpg', 'right', :t)"
            ),
            {"t": T0},
        )
        command.downgrade(alembic_config(connection), "0003_feedback")
    with engine.connect() as connection:
        count = connection.execute(text("SELECT COUNT(*) FROM predictions")).scalar()
        columns = connection.execute(text("SELECT * FROM users")).keys()
        link = connection.execute(text("SELECT prediction_id FROM feedbacks")).scalar()
    assert count == len(predictions)
    assert "storage_bytes" not in columns
    assert link == 1


def test_each_users_feedback_notes_are_counted_in_bytes(engine: Engine) -> None:
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0007_upload_names")
        for user_id in (1, 2):
            connection.execute(
                text(
                    "INSERT INTO users (id, name, email, hashed_password, is_admin, created_at) "
                    "VALUES (:id, 'Someone', :email, 'x', false, :t)"
                ),
                {"id": user_id, "email": f"user{user_id}@example.com", "t": T0},
            )
        for prediction_id, note in ((1, "Right."), (2, "\U0001f600 blue eyes"), (3, "")):
            connection.execute(
                text(
                    "INSERT INTO predictions (id, user_id, image_file_name, image_bytes, label, "
                    "score, top_k, model_id, latency_ms, cached, created_at) VALUES "
                    "(:id, 1, 'a.jpg', 10, 'x', 0.5, '[]', 'm@1', 1.0, false, :t)"
                ),
                {"id": prediction_id, "t": T0},
            )
            connection.execute(
                text(
                    "INSERT INTO feedbacks (user_id, prediction_id, score, predicted_class, "
                    "image_file_name, feedback, created_at) "
                    "VALUES (1, :id, 0.5, 'x', 'a.jpg', :note, :t)"
                ),
                {"id": prediction_id, "note": note, "t": T0},
            )

        # A note on no prediction, from before feedback had to name one: never given back, so
        # never counted.
        connection.execute(
            text(
                "INSERT INTO feedbacks (user_id, prediction_id, score, predicted_class, "
                "image_file_name, feedback, created_at) "
                "VALUES (2, NULL, 0.5, 'x', 'b.jpg', 'an old note', :t)"
            ),
            {"t": T0},
        )

    upgrade(engine)

    with engine.connect() as connection:
        totals = connection.execute(text("SELECT id, feedback_bytes FROM users ORDER BY id")).all()
    assert [tuple(row) for row in totals] == [(1, 6 + 4 + 10), (2, 0)]  # the emoji is 4 bytes


def test_emails_with_an_internationalized_domain_are_kept_in_ascii(engine: Engine) -> None:
    """Sign-up kept ``ann@bücher.de`` as typed; login now looks up the ASCII form."""
    emails = {
        1: "ann@b\u00fccher.de",
        2: "j\u00f6rg@example.com",  # not ASCII before the @: kept as it was
        3: "bo@m\u00fcller.de",
        4: "bo@xn--mller-kva.de",  # 3's ASCII form, taken already: 3 is kept as it was
        5: "cy@example.com",
    }
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0008_feedback_bytes")
        for user_id, email in emails.items():
            connection.execute(
                text(
                    "INSERT INTO users (id, name, email, hashed_password, is_admin, created_at) "
                    "VALUES (:id, 'Someone', :email, 'x', false, :t)"
                ),
                {"id": user_id, "email": email, "t": T0},
            )

    upgrade(engine)

    with engine.connect() as connection:
        rows = dict(connection.execute(text("SELECT id, email FROM users")).all())
    assert rows == {**emails, 1: "ann@xn--bcher-kva.de"}
