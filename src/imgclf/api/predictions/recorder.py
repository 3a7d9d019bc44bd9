"""Recording answered predictions: one thread, many rows per transaction when they come together.

Under load, answers arrive in bursts (a batch of the model answers them all at once). Each used
to cost a trip to a worker thread and a transaction of its own; here the recorder takes every
record that is waiting, checks their users' storage quotas, stores their uploads, inserts all
the rows and charges the quotas in one transaction, so a burst costs one commit. A lone record
costs one trip and one short transaction.

Recording is also how the predict route proves the caller's account still exists: its token
was checked, and the row's foreign key to ``users`` is checked by the database (user ids are
never reused). One round trip instead of a read before the model and a write after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from imgclf.api.predictions.quota import Charge, StorageQuota
from imgclf.api.predictions.uploads import (
    AcceptedUpload,
    DigestCollisionError,
    StorageFullError,
    hold_uploads,
    store_upload,
)
from imgclf.api.users.service import AccountGoneError
from imgclf.db.base import utcnow
from imgclf.db.driver import DriverStatement
from imgclf.db.engine import Database, take_rows
from imgclf.db.errors import is_foreign_key_violation
from imgclf.db.models import Prediction

logger = logging.getLogger(__name__)
# A Core insert of the table, compiled once per engine and run on its driver (``db.driver``):
# the ORM-enabled insert of the mapped class, built for each group of rows, cost a tenth more
# CPU in a tight loop and a fifth more in the service; SQLAlchemy's execution of the Core one
# was still most of a lone record's time.
_PREDICTIONS = Prediction.metadata.tables[Prediction.__tablename__]
# Every column but the id: a row (``service.prediction_row``, and its time) names each one.
_COLUMNS = [column.key for column in _PREDICTIONS.columns if not column.primary_key]
_INSERT = insert(_PREDICTIONS).returning(_PREDICTIONS.c.id)


class RecordingUnavailableError(Exception):
    """The recorder is stopping, or the database did not record in time: retry shortly."""


@dataclass(slots=True)
class _Record:
    row: dict[str, Any]
    upload: AcceptedUpload
    future: asyncio.Future[int]


class PredictionRecorder:
    """``await record(...)`` returns the new prediction's id. Started and closed by the app."""

    def __init__(
        self,
        database: Database,
        upload_dir: Path,
        *,
        quota: StorageQuota | None = None,
        timeout_s: float = 30.0,
        max_rows: int = 64,
    ) -> None:
        self.database = database
        self.upload_dir = upload_dir
        # Without a quota the users' totals are still kept, for one set later.
        self.quota = quota or StorageQuota(database, None)
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self._insert = DriverStatement(_INSERT, database.engine.dialect, _COLUMNS)
        self._pending: queue.SimpleQueue[_Record | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="imgclf-recorder", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Records handed over before this call are written before it returns; later ones are
        refused."""
        self._closing = True
        if self._thread is not None:
            self._pending.put(None)
            await asyncio.to_thread(self._thread.join)

    async def record(self, row: dict[str, Any], upload: AcceptedUpload) -> int:
        """Store the upload (once per content) and insert the ``predictions`` row.

        Raises StorageFullError or QuotaExceededError when the upload cannot be stored,
        DigestCollisionError when another picture is stored under its name,
        RecordingUnavailableError when the database does not answer in time, AccountGoneError
        when the row's user no longer exists."""
        if self._closing or self._loop is None or self._thread is None:
            raise RecordingUnavailableError("The service is shutting down; retry shortly.")
        future: asyncio.Future[int] = self._loop.create_future()
        self._pending.put(_Record(row, upload, future))
        try:
            # Shielded: the row may still be written after the caller stops waiting.
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            raise RecordingUnavailableError(
                "The database did not record the prediction in time; retry shortly."
            ) from None

    # The recorder's thread ----------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            records, stopping = take_rows(self._pending, self.max_rows)
            try:
                self._write(records)
            except BaseException as error:  # never leave a caller waiting on a dead thread
                logger.exception("the prediction recorder failed on %d records", len(records))
                for record in records:
                    self._settle(record, error)
        # Handed over after close() began: refused, not left waiting.
        while True:
            try:
                late = self._pending.get_nowait()
            except queue.Empty:
                return
            if late is not None:
                self._settle(late, RuntimeError("the prediction recorder has stopped"))

    def _write(self, records: list[_Record]) -> None:
        try:
            outcomes = self._transaction(records)
        except IntegrityError as error:
            gone = is_foreign_key_violation(error)
            if gone and len(records) > 1:
                # A deleted account among them: find which, one record at a time.
                for record in records:
                    self._write([record])
                return
            outcomes = [AccountGoneError() if gone else error] * len(records)
        except Exception as error:
            logger.exception("recording %d predictions failed", len(records))
            outcomes = [error] * len(records)
        for record, outcome in zip(records, outcomes, strict=True):
            self._settle(record, outcome)

    def _transaction(self, records: list[_Record]) -> list[int | BaseException]:
        """Check the quota, store the uploads, insert the rows and charge the quota in one write
        transaction: it holds SQLite's write lock, or on PostgreSQL the users' rows, from the
        check to the charge. Each record's outcome: its new id, or why it was not recorded."""
        outcomes: list[int | BaseException] = []
        stored: list[tuple[int, _Record, Charge]] = []
        with self.database.write_connection() as connection:
            user_ids = [record.row["user_id"] for record in records]
            ledger = self.quota.ledger(connection, user_ids, for_update=True)
            # After the users' rows, as a deletion takes them: see hold_uploads.
            hold_uploads(connection)
            for user_id, record in zip(user_ids, records, strict=True):
                charge = ledger.admit(user_id, record.upload)
                if charge.account_gone:  # nothing stored for a deleted account
                    outcomes.append(AccountGoneError())
                    continue
                try:
                    if charge.refusal is not None:  # over its user's quota: neither stored
                        raise charge.refusal  # nor recorded
                    store_upload(self.upload_dir, record.upload)
                except (StorageFullError, DigestCollisionError) as error:
                    ledger.take_back(user_id, record.upload, charge)
                    outcomes.append(error)
                else:
                    stored.append((len(outcomes), record, charge))
                    outcomes.append(0)  # its id, once inserted
            for index, record, _ in stored:
                row = {**record.row, "created_at": utcnow()}
                outcomes[index] = self._insert.scalar(connection, row)
            if stored:
                self.quota.charge(
                    connection, [(record.row["user_id"], charge) for _, record, charge in stored]
                )
        return outcomes

    def _settle(self, record: _Record, outcome: int | BaseException) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(_resolve, record.future, outcome)


def _resolve(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    if future.done():  # its caller went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
