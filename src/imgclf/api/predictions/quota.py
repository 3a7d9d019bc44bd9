"""Each user's storage quota: the bytes of the distinct uploads stored for them.

An upload a user has stored before costs nothing again (files are named by their content);
another user's copy of the same picture counts for that user too. Each user's total is kept in
``users.storage_bytes``, so a check costs two index lookups whatever the user's history.

The recorder checks and charges in the transaction that inserts the predictions (see
``PredictionRecorder``), holding SQLite's write lock or, on PostgreSQL, the users' rows: two
processes recording for one user take turns, so they cannot both spend the last of a quota.
The jobs route's early check (a refusal before the model rather than after it) is a plain read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, case, func, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from imgclf.api.predictions.uploads import AcceptedUpload, StorageFullError, name_chunks
from imgclf.db.driver import DriverStatement
from imgclf.db.engine import Database
from imgclf.db.models import Prediction, User

# Built once, and compiled once per engine (``QuotaStatements``): the check runs before every
# recorded prediction, and building and keying the statements each time was a third of its cost.
_USERS = User.metadata.tables[User.__tablename__]
_USED = select(_USERS.c.storage_bytes).where(_USERS.c.id == bindparam("user_id"))
# FOR NO KEY UPDATE on PostgreSQL: other recorders wait for the row, and so does feedback
# (which counts the user's notes on it), but not inserts that only refer to it. SQLite leaves
# it out; its writer holds the whole database.
_USED_FOR_UPDATE = _USED.with_for_update(key_share=True)
# The largest size a user's rows give the file, or None when they have none: rows from before
# sizes were recorded say 0, and the file counts at its size from its next upload on.
_STORED_SIZE = select(func.max(Prediction.image_bytes)).where(
    Prediction.user_id == bindparam("user_id"),
    Prediction.image_file_name == bindparam("file_name"),
)
_ADD = (
    update(_USERS)
    .where(_USERS.c.id == bindparam("owner"))
    .values(storage_bytes=_USERS.c.storage_bytes + bindparam("added"))
)


def counted_sizes(session: Session, user_id: int, names: Iterable[str]) -> dict[str, int]:
    """The size the quota counts each of these files at for the user (its largest among their
    rows); a file none of their rows names is absent."""
    counted: dict[str, int] = {}
    for chunk in name_chunks(names):
        rows = session.execute(
            select(Prediction.image_file_name, func.max(Prediction.image_bytes))
            .where(Prediction.user_id == user_id, Prediction.image_file_name.in_(chunk))
            .group_by(Prediction.image_file_name)
        )
        counted.update({name: size or 0 for name, size in rows})
    return counted


def release(session: Session, user_id: int, freed: int) -> None:
    """Take ``freed`` bytes off the user's total (rows that counted them were removed)."""
    session.execute(
        update(User)
        .where(User.id == user_id)
        .values(
            storage_bytes=case((User.storage_bytes > freed, User.storage_bytes - freed), else_=0)
        )
        .execution_options(synchronize_session=False)
    )


class QuotaStatements:
    """The quota's statements, compiled for one engine and run on its driver (``db.driver``)."""

    def __init__(self, dialect: Dialect) -> None:
        self.used = DriverStatement(_USED, dialect)
        self.used_for_update = DriverStatement(_USED_FOR_UPDATE, dialect)
        self.stored_size = DriverStatement(_STORED_SIZE, dialect)
        self.add = DriverStatement(_ADD, dialect)


class QuotaExceededError(StorageFullError):
    """The upload would take its user past the storage quota."""

    quota = "storage"  # the user's own, counted apart from the service's faults


def quota_exceeded(used: int, size: int, limit: int) -> QuotaExceededError:
    mb = 2**20
    return QuotaExceededError(
        f"Your storage quota is full: your images take {used / mb:.1f} MB of "
        f"{limit / mb:g} MB and this one needs {size / mb:.1f} MB. "
        "Images you have uploaded before can still be classified.",
    )


@dataclass(frozen=True, slots=True)
class Charge:
    """What storing one upload adds to its user's total (0 for a file they have already), or
    why it may not be stored."""

    new_bytes: int = 0
    refusal: QuotaExceededError | None = None
    # The user's row is gone (the account was deleted since its token was issued): nothing of
    # theirs may be stored.
    account_gone: bool = False


class QuotaLedger:
    """One transaction's view of some users' totals: uploads are admitted one by one, each
    counting against the next, and one whose storing failed is taken back."""

    def __init__(
        self,
        connection: Connection,
        statements: QuotaStatements,
        used: dict[int, int | None],
        limit: int | None,
    ) -> None:
        self.connection = connection
        self.statements = statements
        self.used = used
        self.limit = limit
        self._counted: dict[tuple[int, str], int] = {}  # (user, file) -> size it counts at

    def admit(self, user_id: int, upload: AcceptedUpload) -> Charge:
        used = self.used[user_id]
        if used is None:
            return Charge(account_gone=True)
        key = (user_id, upload.file_name)
        size = len(upload.data)
        counted = self._counted.get(key)
        if counted is None:  # the size the user's rows count for the file; None: never stored
            counted = self.statements.stored_size.scalar(
                self.connection, {"user_id": user_id, "file_name": upload.file_name}
            )
        if counted is not None:  # stored for them already: never refused, costs what it grew
            self._counted[key] = max(counted, size)
            return self._charged(user_id, max(0, size - counted))
        if self.limit is not None and used + size > self.limit:
            return Charge(refusal=quota_exceeded(used, size, self.limit))
        self._counted[key] = size
        return self._charged(user_id, size)

    def take_back(self, user_id: int, upload: AcceptedUpload, charge: Charge) -> None:
        """The upload ``admit`` charged was not stored after all."""
        used = self.used[user_id]
        if charge.new_bytes and used is not None:
            self.used[user_id] = used - charge.new_bytes
            self._counted.pop((user_id, upload.file_name), None)

    def _charged(self, user_id: int, size: int) -> Charge:
        self.used[user_id] = (self.used[user_id] or 0) + size
        return Charge(new_bytes=size)


class StorageQuota:
    """Decides which uploads fit their users' quotas (``limit_bytes=None``: all do, and the
    totals are still kept), and charges the stored ones."""

    def __init__(self, database: Database, limit_bytes: int | None) -> None:
        self.database = database
        self.limit_bytes = limit_bytes
        self.statements = QuotaStatements(database.engine.dialect)

    def refusals(
        self, uploads: Sequence[tuple[int, AcceptedUpload]]
    ) -> list[QuotaExceededError | None]:
        """For each (user id, upload): None if it may be stored now, else its refusal."""
        with self.database.read_connection() as connection:
            ledger = self.ledger(connection, [user_id for user_id, _ in uploads])
            return [ledger.admit(user_id, upload).refusal for user_id, upload in uploads]

    def ledger(
        self, connection: Connection, user_ids: Iterable[int], *, for_update: bool = False
    ) -> QuotaLedger:
        """The users' totals as the transaction sees them. ``for_update``: lock their rows
        until it ends."""
        statement = self.statements.used_for_update if for_update else self.statements.used
        # In one order in every process: two recorders never wait on each other's rows.
        used: dict[int, int | None] = {
            user_id: statement.scalar(connection, {"user_id": user_id})
            for user_id in sorted(set(user_ids))
        }
        return QuotaLedger(connection, self.statements, used, self.limit_bytes)

    def charge(self, connection: Connection, stored: Sequence[tuple[int, Charge]]) -> None:
        """Add what the stored uploads (user id, charge) cost to their users' totals."""
        added: dict[int, int] = defaultdict(int)
        for user_id, charge in stored:
            added[user_id] += charge.new_bytes
        rows = [{"owner": user_id, "added": size} for user_id, size in added.items() if size]
        if rows:
            self.statements.add.execute_many(connection, rows)
