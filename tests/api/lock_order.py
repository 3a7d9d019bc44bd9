"""Two transactions made to meet in one order on PostgreSQL, to show that they cannot deadlock.

The first runs until it has executed a statement that holds given words, and pauses, holding
its locks; the second starts and runs until it waits for a lock (PostgreSQL's
``pg_stat_activity``); then the first goes on. Taken in opposite orders, their locks would
make a cycle there, every time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from imgclf.db.engine import Database

Work = Callable[[Session], Any]

_LOCK_WAITS = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


def meet(database: Database, first: Work, pause_after: str, second: Work) -> list[Future[Any]]:
    """Run ``first`` until its first statement that holds ``pause_after``, then ``second`` until
    it waits for a lock, then both to their ends; each in its own transaction. Returns their
    outcomes, once both are over."""
    paused, go_on = threading.Event(), threading.Event()

    def pause(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if pause_after in statement and not paused.is_set():
            paused.set()
            go_on.wait(10)

    def run_first() -> Any:
        with database.transaction() as session:
            event.listen(session.connection(), "after_cursor_execute", pause)
            return first(session)

    def run_second() -> Any:
        with database.transaction() as session:
            return second(session)

    with ThreadPoolExecutor(2) as pool:
        outcomes = [pool.submit(run_first)]
        try:
            assert paused.wait(10), f"the first transaction never ran {pause_after!r}"
            outcomes.append(pool.submit(run_second))
            assert _waits_for_a_lock(database), "the second transaction never waited"
        finally:
            go_on.set()
        for outcome in outcomes:
            outcome.exception(timeout=30)
    return outcomes


def _waits_for_a_lock(database: Database, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    with database.engine.connect() as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.scalar(_LOCK_WAITS)
            watcher.rollback()  # a transaction reads pg_stat_activity once
            if waiting:
                return True
            time.sleep(0.02)
    return False
