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
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, update

from imgclf.api.predictions.uploads import AcceptedUpload, StorageFullError
from imgclf.db.engine import Database
from imgclf.db.models import Prediction, User

# Built once: the check runs before every recorded prediction, and building and keying the
# statements each time was a third of its cost.
_USERS = User.metadata.tables[User.__tablename__]
_USED = select(_USERS.c.storage_bytes).where(_USERS.c.id == bindparam("user_id"))
# FOR NO KEY UPDATE on PostgreSQL: other recorders wait for the row, inserts that only refer
# to it (feedback) do not. SQLite leaves it out; its writer holds the whole database.
_USED_FOR_UPDATE = _USED.with_for_update(key_share=True)
_STORED = (
    select(Prediction.id)
    .where(
        Prediction.user_id == bindparam("user_id"),
        Prediction.image_file_name == bindparam("file_name"),
    )
    .limit(1)
)
_ADD = (
    update(_USERS)
    .where(_USERS.c.id == bindparam("owner"))
    .values(storage_bytes=_USERS.c.storage_bytes + bindparam("added"))
)


def has_stored(connection: Connection, user_id: int, file_name: str) -> bool:
    found = connection.scalar(_STORED, {"user_id": user_id, "file_name": file_name})
    return found is not None


class QuotaExceededError(StorageFullError):
    """The upload would take its user past the storage quota."""


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


class StorageQuota:
    """Decides which uploads fit their users' quotas (``limit_bytes=None``: all do, and the
    totals are still kept), and charges the stored ones."""

    def __init__(self, database: Database, limit_bytes: int | None) -> None:
        self.database = database
        self.limit_bytes = limit_bytes

    def refusals(
        self, uploads: Sequence[tuple[int, AcceptedUpload]]
    ) -> list[QuotaExceededError | None]:
        """For each (user id, upload): None if it may be stored now, else its refusal."""
        with self.database.read_connection() as connection:
            return [charge.refusal for charge in self.check(connection, uploads)]

    def check(
        self,
        connection: Connection,
        uploads: Sequence[tuple[int, AcceptedUpload]],
        *,
        for_update: bool = False,
    ) -> list[Charge]:
        """Each (user id, upload)'s charge, in order; earlier uploads of the list count against
        the later ones. ``for_update``: lock the users' rows until the transaction ends."""
        statement = _USED_FOR_UPDATE if for_update else _USED
        # In one order in every process: two recorders never wait on each other's rows.
        used = {
            user_id: int(connection.scalar(statement, {"user_id": user_id}) or 0)
            for user_id in sorted({user_id for user_id, _ in uploads})
        }
        kept: set[tuple[int, str]] = set()
        charges: list[Charge] = []
        for user_id, upload in uploads:
            key = (user_id, upload.file_name)
            if key in kept or has_stored(connection, user_id, upload.file_name):
                kept.add(key)
                charges.append(Charge())
                continue
            size = len(upload.data)
            if self.limit_bytes is not None and used[user_id] + size > self.limit_bytes:
                refusal = quota_exceeded(used[user_id], size, self.limit_bytes)
                charges.append(Charge(refusal=refusal))
                continue
            used[user_id] += size
            kept.add(key)
            charges.append(Charge(new_bytes=size))
        return charges

    @staticmethod
    def charge(connection: Connection, stored: Sequence[tuple[int, Charge]]) -> None:
        """Add what the stored uploads (user id, charge) cost to their users' totals."""
        added: dict[int, int] = defaultdict(int)
        for user_id, charge in stored:
            added[user_id] += charge.new_bytes
        rows = [{"owner": user_id, "added": size} for user_id, size in added.items() if size]
        if rows:
            connection.execute(_ADD, rows)
