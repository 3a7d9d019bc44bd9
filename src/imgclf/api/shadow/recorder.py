"""Recording shadow comparisons: one thread, many rows per transaction, nobody waiting.

The pattern of the prediction recorder, without futures: a comparison belongs to no caller, so
it is handed over and forgotten. When the database falls behind, comparisons past
``max_waiting`` are dropped (and counted) rather than held in memory without end.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert

from imgclf.db.engine import Database, take_rows
from imgclf.db.models import ShadowComparison

logger = logging.getLogger(__name__)


class ComparisonRecorder:
    def __init__(
        self,
        database: Database,
        *,
        on_dropped: Callable[[dict[str, Any]], None],
        max_rows: int = 256,
        max_waiting: int = 10_000,
    ) -> None:
        self.database = database
        self.on_dropped = on_dropped
        self.max_rows = max_rows
        self.max_waiting = max_waiting
        self._pending: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="imgclf-shadow-recorder", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Comparisons handed over before this call are written before it returns."""
        if self._thread is not None:
            self._pending.put(None)
            self._thread.join()
            self._thread = None

    def record(self, row: dict[str, Any]) -> None:
        if self._thread is None or self._pending.qsize() >= self.max_waiting:
            self.on_dropped(row)
            return
        self._pending.put(row)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            rows, stopping = take_rows(self._pending, self.max_rows)
            if not rows:
                continue
            try:
                with self.database.write_connection() as connection:
                    connection.execute(insert(ShadowComparison), rows)
            except Exception:
                logger.exception("recording %d shadow comparisons failed", len(rows))
                for row in rows:
                    self.on_dropped(row)
