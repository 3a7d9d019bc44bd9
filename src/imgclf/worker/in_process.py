"""The default without Redis: a `LocalQueue` whose batching worker runs in threads of the API
process."""

from __future__ import annotations

import asyncio

from imgclf.model import ImageLimits, load_classifier
from imgclf.queue.local import LocalQueue
from imgclf.settings import Settings
from imgclf.worker.batching import BatchingWorker


class InProcessQueue(LocalQueue):
    """Loads the model and starts the worker threads when the app starts; stops them after."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(max_pending=settings.max_pending)
        self.settings = settings
        self.worker: BatchingWorker | None = None

    async def start(self) -> None:
        await super().start()
        # Loading and warming up the model takes a moment: keep it off the event loop.
        lanes = self.settings.resolved_worker_concurrency
        classifier = await asyncio.to_thread(
            load_classifier, self.settings, single_thread_runs=lanes > 1
        )
        self.model_id = classifier.model_id
        self.worker = BatchingWorker(
            self,
            classifier,
            ImageLimits.from_settings(self.settings),
            max_batch_size=self.settings.max_batch_size,
            max_batch_wait_ms=self.settings.max_batch_wait_ms,
            lanes=lanes,
        )
        self.worker.start()

    async def close(self) -> None:
        await super().close()
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop)

    @property
    def live_workers(self) -> int:
        """One batching worker per process (its lanes are threads of that one worker)."""
        return 1 if self.worker is not None and self.worker.alive else 0
