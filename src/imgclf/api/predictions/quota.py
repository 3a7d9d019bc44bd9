"""Each user's storage quota: the bytes of the distinct uploads stored for them.

An upload a user has stored before costs nothing again (files are named by their content);
another user's copy of the same picture counts for that user too. The check runs in the
recorder's thread just before uploads are written, one process at a time, so concurrent
uploads through several API processes may pass it together: the overshoot is bounded by what
those processes have in flight (``IMGCLF_MAX_PENDING_BYTES`` each), not by time.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, func, select

from imgclf.api.predictions.uploads import AcceptedUpload, StorageFullError
from imgclf.db.engine import Database
from imgclf.db.models import Prediction

# Built once: the check runs before every recorded prediction, and building and keying the
# statements each time was a third of its cost.
_PER_FILE = (
    select(func.max(Prediction.image_bytes).label("size"))
    .where(Prediction.user_id == bindparam("user_id"))
    .group_by(Prediction.image_file_name)
    .subquery()
)
_USED = select(func.coalesce(func.sum(_PER_FILE.c.size), 0))
_STORED = (
    select(Prediction.id)
    .where(
        Prediction.user_id == bindparam("user_id"),
        Prediction.image_file_name == bindparam("file_name"),
    )
    .limit(1)
)


def storage_used(connection: Connection, user_id: int) -> int:
    """Bytes of the distinct files stored for the user."""
    return int(connection.scalar(_USED, {"user_id": user_id}) or 0)


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


class StorageQuota:
    """Decides, for uploads about to be stored, which fit their users' quotas."""

    def __init__(self, database: Database, limit_bytes: int) -> None:
        self.database = database
        self.limit_bytes = limit_bytes

    def refusals(
        self, uploads: list[tuple[int, AcceptedUpload]]
    ) -> list[QuotaExceededError | None]:
        """For each (user id, upload) in order: None if it may be stored, else its refusal.
        Earlier uploads of the list count against the later ones."""
        used: dict[int, int] = {}
        kept: set[tuple[int, str]] = set()
        outcomes: list[QuotaExceededError | None] = []
        with self.database.read_connection() as connection:
            for user_id, upload in uploads:
                key = (user_id, upload.file_name)
                if key in kept or has_stored(connection, user_id, upload.file_name):
                    kept.add(key)
                    outcomes.append(None)
                    continue
                if user_id not in used:
                    used[user_id] = storage_used(connection, user_id)
                size = len(upload.data)
                if used[user_id] + size > self.limit_bytes:
                    outcomes.append(quota_exceeded(used[user_id], size, self.limit_bytes))
                    continue
                used[user_id] += size
                kept.add(key)
                outcomes.append(None)
        return outcomes
