"""History retention: each user keeps their newest predictions, ``history_keep`` of them.

Every answer is a row, and an answer from the cache, or of a picture the user has stored
already, costs the storage quota nothing: without a bound one account could add rows without
end (a thousand a second from cached answers). A sweep in each API process looks, every
``history_sweep_s``, at the users answered since its last look and removes each one's
predictions past their newest ``history_keep``, with those predictions' feedback. Uploads no
remaining row names are removed, and the user's storage total is counted again from what stays.
Nothing on the request path pays for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, ScalarSelect, delete, func, select, update
from sqlalchemy.orm import Session

from imgclf.api.predictions.uploads import hold_uploads, recorded_names, remove_uploads
from imgclf.db.engine import Database
from imgclf.db.models import Feedback, Prediction, User

logger = logging.getLogger(__name__)


def prune_history(database: Database, upload_dir: Path, user_id: int, keep: int) -> int:
    """Remove the user's predictions past their newest ``keep`` (and their feedback); return
    how many went."""
    with database.transaction() as session:
        newest_gone = _newest_past(session, user_id, keep)
        if newest_gone is None:
            return 0
        # In the order an account's deletion takes them (users.service.delete_user): the
        # user's row, then the uploads. Recorders and feedback for this user wait meanwhile.
        held = select(User.id).where(User.id == user_id).with_for_update()
        if session.scalar(held) is None:
            return 0
        old = (Prediction.user_id == user_id, Prediction.id <= newest_gone)
        names = set(session.scalars(select(Prediction.image_file_name).where(*old).distinct()))
        hold_uploads(session, removing=True)
        session.execute(
            delete(Feedback).where(Feedback.prediction_id.in_(select(Prediction.id).where(*old)))
        )
        gone: CursorResult[Any] = session.execute(delete(Prediction).where(*old))  # type: ignore[assignment]
        removed = gone.rowcount
        session.execute(
            update(User)
            .where(User.id == user_id)
            .values(storage_bytes=_stored_bytes(user_id))
            .execution_options(synchronize_session=False)
        )
        # Before the commit, while the uploads are held, as a deletion does.
        remove_uploads(upload_dir, names - recorded_names(session, names))
    logger.info(
        "history of user %d: %d predictions past the newest %d removed", user_id, removed, keep
    )
    return int(removed)


def _newest_past(session: Session, user_id: int, keep: int) -> int | None:
    """The id of the newest prediction past the user's newest ``keep``; None if they have no
    more than ``keep``."""
    return session.scalar(
        select(Prediction.id)
        .where(Prediction.user_id == user_id)
        .order_by(Prediction.id.desc())
        .offset(keep)
        .limit(1)
    )


def _stored_bytes(user_id: int) -> ScalarSelect[Any]:
    """What the quota counts for the user (each distinct file once, at its largest size), as
    a scalar subquery; the index on (user, file, size) answers it."""
    per_file = (
        select(func.max(Prediction.image_bytes).label("size"))
        .where(Prediction.user_id == user_id)
        .group_by(Prediction.image_file_name)
        .subquery()
    )
    return select(func.coalesce(func.sum(per_file.c.size), 0)).scalar_subquery()


class HistoryRetention:
    """The periodic sweep: each time, the users answered since the last one."""

    def __init__(self, database: Database, upload_dir: Path, *, keep: int, every_s: float) -> None:
        self.database = database
        self.upload_dir = upload_dir
        self.keep = keep
        self.every_s = every_s
        # The newest prediction id the last sweep saw: the first sweep looks at every user.
        self._seen_id = 0
        self._task: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Future[int] | None = None

    def sweep(self) -> int:
        """Prune the history of every user answered since the last sweep; how many went."""
        with self.database.transaction(writes=False) as session:
            answered = session.execute(
                select(Prediction.user_id, func.max(Prediction.id))
                .where(Prediction.id > self._seen_id)
                .group_by(Prediction.user_id)
            ).all()
        removed = 0
        for user_id, _newest in answered:
            removed += prune_history(self.database, self.upload_dir, user_id, self.keep)
        # Only once every one of them is done: a sweep that fails leaves them to the next.
        self._seen_id = max((newest for _user, newest in answered), default=self._seen_id)
        return removed

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="imgclf-history-retention")

    async def close(self) -> None:
        """Stop sweeping; a sweep under way finishes first (its thread holds the database)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sweeping is not None:
            with contextlib.suppress(Exception):
                await self._sweeping

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self._sweeping = asyncio.ensure_future(asyncio.to_thread(self.sweep))
            try:
                await asyncio.shield(self._sweeping)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database away for a while: the next sweep tries again
                logger.exception("the history sweep failed; it runs again in %g s", self.every_s)
