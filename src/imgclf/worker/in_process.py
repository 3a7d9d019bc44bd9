"""The default without Redis: a `LocalQueue` whose batching worker runs in threads of the API
process and serves every model of the repository, sharing its lanes.

The live version of each model is kept here, and in a small file under the data folder so that
a restart keeps what was promoted. A promotion loads and warms the new version beside the old
one, then flips the live version: jobs admitted before the flip finish on the old version, which
is dropped once none of them can be waiting any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from imgclf.model.bundle import BundleError
from imgclf.model.images import ImageLimits
from imgclf.model.repository import (
    ModelCatalogue,
    live_record_path,
    live_versions,
    read_catalogue,
    read_live_record,
    write_live_record,
)
from imgclf.queue.local import LocalQueue
from imgclf.queue.models import (
    ModelStatus,
    ModelUnavailableError,
    PromotionError,
    UnknownModelError,
)
from imgclf.settings import Settings
from imgclf.worker.batching import BatchingWorker
from imgclf.worker.models import LoadedModels

logger = logging.getLogger(__name__)
# How long the worker's busy share is measured over.
BUSY_WINDOW_S = 0.5


# How often GET /models reads the model repository again, at most.
CATALOGUE_REFRESH_S = 2.0


class InProcessQueue(LocalQueue):
    """Loads the models and starts the worker threads when the app starts; stops them after."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(max_pending=settings.max_pending)
        self.settings = settings
        self.worker: BatchingWorker | None = None
        self.models: LoadedModels | None = None
        self.live: dict[str, int] = {}
        self._promoting = asyncio.Lock()
        self._catalogue_read_at = -CATALOGUE_REFRESH_S
        self._tidying: asyncio.Task[None] | None = None
        # (monotonic time, the worker's busy seconds then, the busy share measured up to it)
        self._busy_sample = (time.monotonic(), 0.0, 0.0)

    @property
    def catalogue(self) -> ModelCatalogue:
        assert self.models is not None, "the queue has not started"
        return self.models.catalogue

    async def start(self) -> None:
        await super().start()
        lanes = self.settings.resolved_worker_concurrency
        # Reading the repository, loading and warming the models take a moment: off the loop.
        self.models = await asyncio.to_thread(
            LoadedModels,
            self.settings,
            single_thread_runs=lanes > 1,
            grace_s=self.settings.longest_timeout_s + 1,
        )
        record = live_record_path(self.settings)
        self.live = live_versions(self.catalogue, read_live_record(record))
        await asyncio.to_thread(self.models.keep, self._live_refs())
        missing = sorted(self._live_refs() - set(self.models.loaded))
        if missing:  # as with a single bundle: a broken live model stops the start, loudly
            raise BundleError(
                f"The live model versions {', '.join(missing)} cannot be loaded (the log says "
                "why); fix them, or promote another version in live-models.json."
            )
        await asyncio.to_thread(write_live_record, record, self.live)
        self.model_id = self._live_refs_text()
        self.worker = BatchingWorker(
            self,
            self.models,
            ImageLimits.from_settings(self.settings),
            max_batch_size=self.settings.max_batch_size,
            max_batch_wait_ms=self.settings.max_batch_wait_ms,
            lanes=lanes,
        )
        self.worker.start()
        self._tidying = asyncio.create_task(self._drop_unneeded(), name="imgclf-model-tidying")

    async def close(self) -> None:
        if self._tidying is not None:
            self._tidying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tidying
        if self.worker is not None:
            # Before the queue's close wakes the lane waiting for a job: it stops, rather than
            # waiting half a second for another.
            self.worker.stop_taking()
        await super().close()
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop)

    @property
    def live_workers(self) -> int:
        """One batching worker per process (its lanes are threads of that one worker)."""
        return 1 if self.worker is not None and self.worker.alive else 0

    def workers_busy(self) -> float | None:
        """The share of the lanes' time spent on batches over the last half second or so."""
        if self.worker is None:
            return None
        then, busy_then, share = self._busy_sample
        now, busy_now = time.monotonic(), self.worker.busy_s
        if now - then >= BUSY_WINDOW_S:
            share = min(1.0, (busy_now - busy_then) / ((now - then) * self.worker.lanes))
            self._busy_sample = (now, busy_now, share)
        return share

    @property
    def default_model(self) -> str:
        return self.catalogue.default

    async def resolve(self, name: str | None) -> str:
        name = name or self.default_model
        if name not in self.live:
            raise UnknownModelError(name, sorted(self.live))
        if not self.live_workers:
            raise ModelUnavailableError(name, [])
        return f"{name}@{self.live[name]}"

    async def model_statuses(self) -> list[ModelStatus]:
        await self._refresh_catalogue()
        return [await self._status(name) for name in sorted(self.live)]

    async def _refresh_catalogue(self) -> None:
        """Versions copied into the repository since are listed, so the admin can make them
        live (Redis workers read it again as they report). Read at most every few seconds
        (the UI asks at every rerun); kept only if it still holds every live version."""
        now = time.monotonic()
        if now < self._catalogue_read_at + CATALOGUE_REFRESH_S:
            return
        async with self._promoting:  # a promotion's catalogue is never replaced by an older one
            self._catalogue_read_at = now
            assert self.models is not None
            await asyncio.to_thread(self.models.refresh_catalogue, self._holds_live_versions)

    def _holds_live_versions(self, catalogue: ModelCatalogue) -> bool:
        return all(catalogue.find(name, version) for name, version in self.live.items())

    async def promote(self, name: str, version: int) -> ModelStatus:
        async with self._promoting:
            try:
                catalogue = await asyncio.to_thread(read_catalogue, self.settings)
            except (BundleError, OSError) as error:
                raise PromotionError(
                    f"The model repository cannot be read, so the live version has not "
                    f"changed: {error}"
                ) from None
            if catalogue.find(name, version) is None:
                known = [f"{n}@{v}" for n in catalogue.names for v in catalogue.versions(n)]
                raise UnknownModelError(f"{name}@{version}", known)
            assert self.models is not None
            self.models.catalogue = catalogue
            # Loaded and warmed before anything changes: until the flip, nothing waits on it.
            try:
                await asyncio.to_thread(self.models.load, f"{name}@{version}")
            except BundleError as error:
                raise PromotionError(
                    f"{name}@{version} cannot be loaded, so the live version has not "
                    f"changed: {error}"
                ) from None
            previous = self.live.get(name)
            self.live = {**live_versions(catalogue, self.live), name: version}
            await asyncio.to_thread(write_live_record, live_record_path(self.settings), self.live)
            self.model_id = self._live_refs_text()
            logger.info("%s is live (was version %s)", f"{name}@{version}", previous)
            return await self._status(name)

    async def _status(self, name: str) -> ModelStatus:
        entry = self.catalogue.find(name, self.live[name])
        assert entry is not None
        assert self.models is not None
        loaded = [ref for ref in self.models.loaded if ref.rpartition("@")[0] == name]
        return ModelStatus(
            name=name,
            live_version=self.live[name],
            versions=self.catalogue.versions(name),
            input_size=entry.input_size,
            precision=entry.precision,
            accuracy=entry.top1_published,
            default=name == self.default_model,
            workers=self.live_workers,
            queue_depth=await self.depth(name),
            loaded=loaded,
        )

    def _live_refs(self) -> set[str]:
        return {f"{name}@{version}" for name, version in self.live.items()}

    def _live_refs_text(self) -> str:
        return ", ".join(sorted(self._live_refs()))

    async def _drop_unneeded(self) -> None:
        """Versions no longer live are dropped once their last admitted job is past its
        deadline (LoadedModels counts the time)."""
        assert self.models is not None
        while True:
            await asyncio.sleep(min(5.0, self.models.grace_s))
            try:
                await asyncio.to_thread(self.models.keep, self._live_refs())
            except Exception:
                logger.exception("tidying the loaded models failed")
