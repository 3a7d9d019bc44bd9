"""The prediction recorder on a real database (SQLite and PostgreSQL): many rows per
transaction, a deleted account refused alone, an upload that cannot be stored refused alone."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imgclf.api.predictions.quota import QuotaExceededError, StorageQuota
from imgclf.api.predictions.recorder import PredictionRecorder, RecordingUnavailableError
from imgclf.api.predictions.service import Answer, prediction_row
from imgclf.api.predictions.uploads import (
    AcceptedUpload,
    DigestCollisionError,
    StorageFullError,
    store_upload,
)
from imgclf.api.users.service import AccountGoneError, delete_user
from imgclf.db.engine import Database, make_engine
from imgclf.db.migrate import upgrade
from imgclf.db.models import Prediction, User
from imgclf.settings import Settings
from tests.support import DOG_JPEG

ANSWER = Answer([("Eskimo_dog", 0.6222), ("malamute", 0.2)], "efficientnet-lite0@test", False, 12.5)


def upload_of(data: bytes) -> AcceptedUpload:
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    return AcceptedUpload(data=data, digest=digest, file_name=f"{digest}.jpg")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(Settings(database_url=database_url))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def writes(engine: Engine) -> Database:
    return Database(engine)


def add_user(writes: Database, email: str) -> int:
    with writes.transaction() as session:
        user = User(name="Someone", email=email, hashed_password="not a real hash")
        session.add(user)
        session.flush()
        return user.id


def count_commits(engine: Engine) -> list[int]:
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    return commits


def record_all(
    writes: Database, upload_dir: Path, items: list[tuple[int, AcceptedUpload]]
) -> list[int | BaseException]:
    """Hand every record over at once, as a batch of answers does."""

    async def scenario() -> list[Any]:
        recorder = PredictionRecorder(writes, upload_dir)
        recorder.start()
        try:
            calls = [
                recorder.record(prediction_row(user_id, upload, ANSWER), upload)
                for user_id, upload in items
            ]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await recorder.close()

    return asyncio.run(scenario())


def test_records_that_arrive_together_share_one_transaction(
    engine: Engine, writes: Database, tmp_path: Path
) -> None:
    alice = add_user(writes, "alice@example.com")
    dog = upload_of(DOG_JPEG.read_bytes())
    commits = count_commits(engine)

    ids = record_all(writes, tmp_path, [(alice, dog)] * 20)

    assert all(isinstance(prediction_id, int) for prediction_id in ids), ids
    assert len(set(ids)) == 20
    assert len(commits) < 20  # a burst is written in far fewer transactions than rows
    with Session(engine) as session:
        rows = session.scalars(select(Prediction).order_by(Prediction.id)).all()
    assert [row.id for row in rows] == sorted(ids)
    assert {(row.user_id, row.label, row.score, row.cached) for row in rows} == {
        (alice, "Eskimo_dog", 0.6222, False)
    }
    assert rows[0].top_k[0] == {"label": "Eskimo_dog", "score": 0.6222}
    assert rows[0].created_at is not None
    assert (tmp_path / dog.file_name).read_bytes() == dog.data  # stored once, whole


def test_each_caller_gets_the_id_of_its_own_row(
    engine: Engine, writes: Database, tmp_path: Path
) -> None:
    users = [add_user(writes, f"user{n}@example.com") for n in range(6)]
    uploads = [upload_of(DOG_JPEG.read_bytes() + bytes([n])) for n in range(6)]

    ids = record_all(writes, tmp_path, list(zip(users, uploads, strict=True)))

    with Session(engine) as session:
        for prediction_id, user_id, upload in zip(ids, users, uploads, strict=True):
            row = session.get(Prediction, prediction_id)
            assert row is not None
            assert (row.user_id, row.image_file_name) == (user_id, upload.file_name)


def stored_bytes(writes: Database, user_id: int) -> int:
    with writes.transaction(writes=False) as session:
        user = session.get(User, user_id)
        assert user is not None
        return user.storage_bytes


def test_each_users_total_counts_each_of_their_files_once(writes: Database, tmp_path: Path) -> None:
    alice = add_user(writes, "alice@example.com")
    bob = add_user(writes, "bob@example.com")
    dog = upload_of(DOG_JPEG.read_bytes())
    other = upload_of(DOG_JPEG.read_bytes() + b"another file")

    # A burst with repeats, then the same files again in later transactions.
    record_all(writes, tmp_path, [(alice, dog), (alice, dog), (bob, dog), (alice, other)])
    record_all(writes, tmp_path, [(alice, dog), (alice, other)])
    record_all(writes, tmp_path, [(bob, dog)])

    assert stored_bytes(writes, alice) == len(dog.data) + len(other.data)
    assert stored_bytes(writes, bob) == len(dog.data)  # his copy counts for him too


def test_the_quota_refuses_from_the_users_total(writes: Database, tmp_path: Path) -> None:
    alice = add_user(writes, "alice@example.com")
    dog = upload_of(DOG_JPEG.read_bytes())
    other = upload_of(DOG_JPEG.read_bytes() + b"another file")
    limit = len(dog.data) + len(other.data) - 1  # room for one of the two

    async def scenario() -> list[int | BaseException]:
        quota = StorageQuota(writes, limit)
        recorder = PredictionRecorder(writes, tmp_path, quota=quota)
        recorder.start()
        try:
            calls = [recorder.record(prediction_row(alice, u, ANSWER), u) for u in (dog, other)]
            first = await asyncio.gather(*calls, return_exceptions=True)
            again = await recorder.record(prediction_row(alice, dog, ANSWER), dog)
            return [*first, again]
        finally:
            await recorder.close()

    recorded, refused, again = asyncio.run(scenario())

    assert isinstance(recorded, int)
    assert isinstance(refused, QuotaExceededError)
    assert isinstance(again, int)  # a file she has stored costs nothing again
    assert not (tmp_path / other.file_name).exists()
    assert stored_bytes(writes, alice) == len(dog.data)


def test_an_upload_whose_storing_failed_is_charged_when_stored_later(writes: Database) -> None:
    alice = add_user(writes, "alice@example.com")
    dog = upload_of(DOG_JPEG.read_bytes())
    quota = StorageQuota(writes, 10 * len(dog.data))
    with writes.write_connection() as connection:
        ledger = quota.ledger(connection, [alice])
        failed = ledger.admit(alice, dog)
        ledger.take_back(alice, dog, failed)  # the disk refused it: the same file comes again
        assert ledger.admit(alice, dog).new_bytes == failed.new_bytes == len(dog.data)
        assert ledger.admit(alice, dog).new_bytes == 0  # and once counted, a repeat is free


def test_a_file_recorded_before_sizes_were_counts_from_its_next_upload(
    writes: Database, tmp_path: Path
) -> None:
    alice = add_user(writes, "alice@example.com")
    dog = upload_of(DOG_JPEG.read_bytes())
    with writes.write_connection() as connection:  # as rows from before revision 0002 are
        connection.execute(
            insert(Prediction), [{**prediction_row(alice, dog, ANSWER), "image_bytes": 0}]
        )

    async def scenario() -> int:
        recorder = PredictionRecorder(writes, tmp_path, quota=StorageQuota(writes, 1))
        recorder.start()
        try:  # over the quota, but hers already: never refused
            return await recorder.record(prediction_row(alice, dog, ANSWER), dog)
        finally:
            await recorder.close()

    assert isinstance(asyncio.run(scenario()), int)
    assert stored_bytes(writes, alice) == len(dog.data)


def test_two_recorders_cannot_both_spend_the_last_of_a_quota(
    database_url: str, engine: Engine, writes: Database, tmp_path: Path
) -> None:
    """Two processes' recorders (two engines on one database), each with a picture for the same
    user and room for one: the first holds its transaction open after its check until the
    second has checked too, or for a second. Checked and charged in one transaction, the
    second waits for the first and is refused; checked apart, both would be stored."""
    alice = add_user(writes, "alice@example.com")
    dog = upload_of(DOG_JPEG.read_bytes())
    other = upload_of(DOG_JPEG.read_bytes() + b"another file")
    limit = len(dog.data) + len(other.data) - 1
    second_engine = make_engine(Settings(database_url=database_url))
    second = Database(second_engine)
    first_checked, second_checked = threading.Event(), threading.Event()

    def first_waits_before_inserting(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PREDICTIONS"):
            first_checked.set()
            second_checked.wait(1.0)

    def second_has_checked(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "storage_bytes" in statement and statement.lstrip().upper().startswith("SELECT"):
            second_checked.set()

    event.listen(engine, "before_cursor_execute", first_waits_before_inserting)
    event.listen(second_engine, "after_cursor_execute", second_has_checked)

    async def scenario() -> list[int | BaseException]:
        recorders = [
            PredictionRecorder(database, tmp_path, quota=StorageQuota(database, limit))
            for database in (writes, second)
        ]
        for recorder in recorders:
            recorder.start()
        try:
            first = asyncio.ensure_future(
                recorders[0].record(prediction_row(alice, dog, ANSWER), dog)
            )
            await asyncio.to_thread(first_checked.wait, 5.0)
            later = recorders[1].record(prediction_row(alice, other, ANSWER), other)
            return list(await asyncio.gather(first, later, return_exceptions=True))
        finally:
            for recorder in recorders:
                await recorder.close()

    try:
        recorded, refused = asyncio.run(scenario())
    finally:
        second_engine.dispose()

    assert isinstance(recorded, int)
    assert isinstance(refused, QuotaExceededError)
    assert stored_bytes(writes, alice) == len(dog.data)


def test_a_deletion_keeps_a_file_another_user_is_recording_meanwhile(
    database_url: str, engine: Engine, writes: Database, tmp_path: Path
) -> None:
    """Alice recorded the dog; Bob's prediction of it finds the file in place and is about to
    insert its row when Alice's account is deleted (another engine, as another process would).
    The deletion waits for Bob's names, then sees his row: the file stays. Without that wait
    it removed the file from under Bob's new row."""
    alice = add_user(writes, "alice@example.com")
    bob = add_user(writes, "bob@example.com")
    dog = upload_of(DOG_JPEG.read_bytes())
    record_all(writes, tmp_path, [(alice, dog)])
    other_engine = make_engine(Settings(database_url=database_url))
    other = Database(other_engine)
    bob_inserting, deletion_done = threading.Event(), threading.Event()

    def bob_waits_before_inserting(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PREDICTIONS"):
            bob_inserting.set()
            deletion_done.wait(1.0)

    def delete_alice() -> None:
        bob_inserting.wait(5.0)
        with other.transaction() as session:
            user = session.get(User, alice)
            assert user is not None
            delete_user(session, user, tmp_path)
        deletion_done.set()

    event.listen(engine, "before_cursor_execute", bob_waits_before_inserting)
    deleting = threading.Thread(target=delete_alice)
    deleting.start()
    try:
        (recorded,) = record_all(writes, tmp_path, [(bob, dog)])
    finally:
        deleting.join(10)
        other_engine.dispose()

    assert isinstance(recorded, int)
    assert deletion_done.is_set()
    assert (tmp_path / dog.file_name).read_bytes() == dog.data


def test_a_deleted_account_fails_alone_and_the_others_are_recorded(
    engine: Engine, writes: Database, tmp_path: Path
) -> None:
    alice = add_user(writes, "alice@example.com")
    gone = add_user(writes, "gone@example.com")
    with writes.transaction() as session:
        session.delete(session.get(User, gone))
    dog = upload_of(DOG_JPEG.read_bytes())

    outcomes = record_all(writes, tmp_path, [(alice, dog), (gone, dog), (alice, dog)])

    first, refused, last = outcomes
    assert isinstance(refused, AccountGoneError)
    assert isinstance(first, int)
    assert isinstance(last, int)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 2


def test_nothing_is_stored_for_a_deleted_account(writes: Database, tmp_path: Path) -> None:
    gone = add_user(writes, "gone@example.com")
    with writes.transaction() as session:
        session.delete(session.get(User, gone))
    theirs = upload_of(DOG_JPEG.read_bytes() + b"only theirs")

    (outcome,) = record_all(writes, tmp_path / "uploads", [(gone, theirs)])

    assert isinstance(outcome, AccountGoneError)
    assert not (tmp_path / "uploads" / theirs.file_name).exists()


def test_an_upload_that_cannot_be_stored_fails_alone(
    engine: Engine, writes: Database, tmp_path: Path
) -> None:
    alice = add_user(writes, "alice@example.com")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the upload folder should be")
    dog = upload_of(DOG_JPEG.read_bytes())

    (outcome,) = record_all(writes, blocked, [(alice, dog)])
    (stored,) = record_all(writes, tmp_path, [(alice, dog)])

    assert isinstance(outcome, StorageFullError)
    assert isinstance(stored, int)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 1


def test_a_picture_forged_to_share_a_stored_pictures_digest_is_refused_and_changes_nothing(
    engine: Engine, writes: Database, tmp_path: Path
) -> None:
    """What a forged MD5 collision presents to the recorder: the name of a picture someone
    stored, other bytes. (Forging a pair of real images takes a collision search that this
    machine has no tool for; the recorder sees only names and bytes.) Stored as the first, the
    second sender's history would show the first picture, and the feedback data set would
    label it with answers given on the second."""
    mallory = add_user(writes, "mallory@example.com")
    alice = add_user(writes, "alice@example.com")
    first = upload_of(DOG_JPEG.read_bytes())
    twin = AcceptedUpload(DOG_JPEG.read_bytes() + b"forged", first.digest, first.file_name)

    (stored,) = record_all(writes, tmp_path, [(mallory, first)])
    refused, recorded = record_all(writes, tmp_path, [(alice, twin), (alice, first)])

    assert isinstance(stored, int)
    assert isinstance(refused, DigestCollisionError)
    assert "same MD5 digest" in str(refused)
    assert isinstance(recorded, int)  # the picture itself is still welcome
    assert (tmp_path / first.file_name).read_bytes() == first.data
    assert stored_bytes(writes, alice) == len(first.data)  # the refused twin cost nothing
    with Session(engine) as session:
        rows = session.scalars(select(Prediction.id).where(Prediction.user_id == alice)).all()
    assert rows == [recorded]


def store_at_once(folder: Path, uploads: list[AcceptedUpload]) -> dict[bytes, str]:
    """Each upload stored by a thread of its own, all let go at the same moment: "stored" or
    "refused" for each one's bytes."""
    start = threading.Barrier(len(uploads))
    outcomes: dict[bytes, str] = {}

    def store(upload: AcceptedUpload) -> None:
        start.wait()
        try:
            store_upload(folder, upload)
            outcomes[upload.data] = "stored"
        except DigestCollisionError:
            outcomes[upload.data] = "refused"

    threads = [threading.Thread(target=store, args=(upload,)) for upload in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_twins_stored_at_the_same_moment_publish_one_and_refuse_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorders of several API processes store at once on PostgreSQL (they share the upload
    folder's lock); threads stand in for them here. Checking for the file and then renaming
    over it let both twins through, the last one staying under the name. Whichever comes
    first, the other must see a twin, not a damaged file: the digest here is MD5 with the
    forgery's mark cut off, so that the two collide as a forged pair does."""

    def colliding_md5(data: bytes) -> str:
        return hashlib.md5(data.removesuffix(b"forged"), usedforsecurity=False).hexdigest()

    monkeypatch.setattr("imgclf.api.predictions.uploads._md5", colliding_md5)
    first = upload_of(DOG_JPEG.read_bytes())
    twin = AcceptedUpload(DOG_JPEG.read_bytes() + b"forged", first.digest, first.file_name)
    for attempt in range(40):
        folder = tmp_path / str(attempt)
        outcomes = store_at_once(folder, [first, twin])

        assert sorted(outcomes.values()) == ["refused", "stored"], attempt
        (stored,) = [data for data, outcome in outcomes.items() if outcome == "stored"]
        assert (folder / first.file_name).read_bytes() == stored
        assert [path.name for path in folder.iterdir()] == [first.file_name]  # nothing aside


def test_a_stored_upload_damaged_on_disk_is_written_again(writes: Database, tmp_path: Path) -> None:
    alice = add_user(writes, "alice@example.com")
    dog = upload_of(DOG_JPEG.read_bytes())
    record_all(writes, tmp_path, [(alice, dog)])
    (tmp_path / dog.file_name).write_bytes(dog.data[:1000])  # cut short, as a failing disk might

    (again,) = record_all(writes, tmp_path, [(alice, dog)])

    assert isinstance(again, int)
    assert (tmp_path / dog.file_name).read_bytes() == dog.data


def test_a_row_the_database_refuses_for_another_reason_is_not_a_deleted_account(
    writes: Database, tmp_path: Path
) -> None:
    alice = add_user(writes, "alice@example.com")
    dog = upload_of(DOG_JPEG.read_bytes())

    async def scenario() -> tuple[BaseException | int, int]:
        recorder = PredictionRecorder(writes, tmp_path)
        recorder.start()
        try:
            broken = {**prediction_row(alice, dog, ANSWER), "label": None}  # NOT NULL
            outcome: BaseException | int
            try:
                outcome = await recorder.record(broken, dog)
            except Exception as error:
                outcome = error
            return outcome, await recorder.record(prediction_row(alice, dog, ANSWER), dog)
        finally:
            await recorder.close()

    refused, recorded = asyncio.run(scenario())

    assert isinstance(refused, IntegrityError)
    assert isinstance(recorded, int)  # the recorder lives on


def test_records_handed_over_after_close_are_refused_not_left_waiting(
    writes: Database, tmp_path: Path
) -> None:
    alice = add_user(writes, "alice@example.com")
    dog = upload_of(DOG_JPEG.read_bytes())

    async def scenario() -> BaseException | int:
        recorder = PredictionRecorder(writes, tmp_path)
        recorder.start()
        await recorder.close()
        try:
            return await asyncio.wait_for(
                recorder.record(prediction_row(alice, dog, ANSWER), dog), 5
            )
        except Exception as error:
            return error

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, RecordingUnavailableError)
