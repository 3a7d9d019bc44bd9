"""History retention: each user keeps their newest predictions, ``history_keep`` of them.

Every answer is a row, and an answer from the cache, or of a picture the user has stored
already, costs the storage quota nothing: without a bound one account could add rows without
end (a thousand a second from cached answers). A sweep in each API process looks, every
``history_sweep_s``, at the users answered since its last looks (by any process) and removes
each one's predictions past their newest ``history_keep``, with those predictions' feedback,
a bounded batch per transaction. Uploads no remaining row names are removed, and the user's
storage total loses what their rows no longer count. Nothing on the request path pays for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from imgclf.api.feedback.service import count_note_bytes, note_bytes
from imgclf.api.predictions.quota import counted_sizes, release
from imgclf.api.predictions.uploads import hold_uploads, recorded_names, remove_uploads
from imgclf.db.engine import Database
from imgclf.db.models import Feedback, Prediction, User

logger = logging.getLogger(__name__)

# Predictions removed per transaction: each holds the user's row (and on SQLite the database's
# write lock, which every recorder waits for) as long as these take: 25-55 ms on SQLite for a
# user past a keep of 10,000 beside half a million rows of another user's.
PRUNE_BATCH = 1000


def prune_history(
    database: Database,
    upload_dir: Path,
    user_id: int,
    keep: int,
    stop: threading.Event | None = None,
) -> int:
    """Remove the user's predictions past their newest ``keep`` (and their feedback), oldest
    first, ``PRUNE_BATCH`` per transaction, until none is left or ``stop`` is set; return how
    many went."""
    with database.transaction(writes=False) as session:
        newest_gone = _newest_past(session, user_id, keep)
    removed = 0
    while newest_gone is not None and (stop is None or not stop.is_set()):
        with database.transaction() as session:
            gone = _prune_batch(session, upload_dir, user_id, newest_gone)
        if not gone:
            break
        removed += gone
    if removed:
        logger.info(
            "history of user %d: %d predictions past the newest %d removed", user_id, removed, keep
        )
    return removed


def _prune_batch(session: Session, upload_dir: Path, user_id: int, newest_gone: int) -> int:
    """Remove the user's oldest ``PRUNE_BATCH`` predictions up to ``newest_gone`` (newer rows
    are kept: they are newer than the ``keep`` newest were when the prune began)."""
    # The user's row first (FOR UPDATE), as an account's deletion takes it: this user's
    # recorders, feedback and logins wait; nobody else's do.
    if session.scalar(select(User.id).where(User.id == user_id).with_for_update()) is None:
        return 0
    batch_end = session.scalar(
        select(Prediction.id)
        .where(Prediction.user_id == user_id)
        .order_by(Prediction.id)
        .offset(PRUNE_BATCH - 1)
        .limit(1)
    )
    last = min(newest_gone, batch_end) if batch_end is not None else newest_gone
    old = (Prediction.user_id == user_id, Prediction.id <= last)
    gone = session.scalar(select(func.count(Prediction.id)).where(*old)) or 0
    if not gone:
        return 0
    names = set(session.scalars(select(Prediction.image_file_name).where(*old).distinct()))
    counted_before = counted_sizes(session, user_id, names)
    feedback = Feedback.prediction_id.in_(select(Prediction.id).where(*old))
    notes = session.scalars(select(Feedback.feedback).where(feedback))
    count_note_bytes(session, user_id, -sum(note_bytes(note) for note in notes))
    session.execute(delete(Feedback).where(feedback))
    session.execute(delete(Prediction).where(*old).execution_options(synchronize_session=False))
    # What the quota counts for each of those files now; gone from the rows, nothing.
    counted_after = counted_sizes(session, user_id, names)
    release(
        session, user_id, sum(size - counted_after.get(n, 0) for n, size in counted_before.items())
    )
    # The uploads' lock is taken only now, after the deletes, so other users' recorders wait
    # only for what follows. While it is held no upload is stored, so a file no row names now
    # cannot gain one before the commit; such files are removed here, as a deletion does. A
    # file the user's kept rows still name is kept without asking.
    hold_uploads(session, removing=True)
    unnamed = names - set(counted_after)
    remove_uploads(upload_dir, unnamed - recorded_names(session, unnamed))
    return int(gone)


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


class HistoryRetention:
    """The periodic sweep: each time, the users answered since the sweep before the last."""

    def __init__(
        self,
        database: Database,
        upload_dir: Path,
        *,
        keep: int,
        every_s: float,
        on_pruned: Callable[[int], object] = lambda _count: None,
    ) -> None:
        self.database = database
        self.upload_dir = upload_dir
        self.keep = keep
        self.every_s = every_s
        self.on_pruned = on_pruned  # with each user's count removed (a metric)
        # Each sweep looks past the newest id the sweep before the last one saw (0 at first:
        # every user). One sweep behind: an id is drawn when its row is inserted, and on
        # PostgreSQL a smaller one may commit after a larger one another process drew.
        self._looked_from = 0
        self._next_from = 0
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Future[int] | None = None

    def sweep(self) -> int:
        """Prune the history of every user answered since the sweep before the last; return
        how many predictions went."""
        query = (
            select(Prediction.user_id)
            .where(Prediction.id > self._looked_from)
            .group_by(Prediction.user_id)
        )
        if self._looked_from == 0:  # a look over everyone's history: only the long ones
            query = query.having(func.count(Prediction.id) > self.keep)
        with self.database.transaction(writes=False) as session:
            newest = session.scalar(select(func.max(Prediction.id))) or 0
            answered = list(session.scalars(query))
        removed = 0
        for user_id in answered:
            if self._stop.is_set():  # shutting down: the next start looks at them again
                return removed
            pruned = prune_history(self.database, self.upload_dir, user_id, self.keep, self._stop)
            if pruned:
                self.on_pruned(pruned)
            removed += pruned
        # Only once every one of them is done: a sweep that fails leaves them to the next.
        self._looked_from, self._next_from = self._next_from, max(newest, self._next_from)
        return removed

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="imgclf-history-retention")

    async def close(self) -> None:
        """Stop sweeping; a sweep under way stops at its next batch (its thread holds the
        database until then)."""
        self._stop.set()
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
