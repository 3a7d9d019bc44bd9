"""Copying a share of a model's uploads to its shadow candidate, off the request path.

``offer`` is called once the caller's answer is known; it decides at once (a dictionary look-up
and a random draw) and, if the copy is made, leaves it to a task nobody awaits. The copy is the
first work dropped under load: it is made only while this process awaits few of them, at most
``shadow_max_waiting`` callers of either model wait for their answers here and as many jobs
wait for a worker, and the workers spent at most ``shadow_max_busy`` of their time on batches
lately (embedded: measured here; Redis: their heartbeats): at saturation almost none is made. In the
queue it is not counted against any caller's admission (``counted=False``). Its failures are
counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from imgclf.api.shadow.recorder import ComparisonRecorder
from imgclf.api.shadow.store import ShadowSetting, ShadowStore
from imgclf.queue.base import JobQueue, JobTimeoutError, QueueError, QueueFullError
from imgclf.queue.models import ModelError

if TYPE_CHECKING:
    from imgclf.api.metrics import ServiceMetrics
    from imgclf.api.predictions.service import Answer
    from imgclf.api.predictions.uploads import AcceptedUpload
    from imgclf.settings import Settings

logger = logging.getLogger(__name__)
# How often each process reads the shared settings again: all agree within this.
REFRESH_S = 1.0


class ShadowRunner:
    def __init__(
        self,
        settings: Settings,
        store: ShadowStore,
        queue: JobQueue,
        recorder: ComparisonRecorder,
        metrics: ServiceMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.recorder = recorder
        self.metrics = metrics
        self.shadows: dict[str, ShadowSetting] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refreshing: asyncio.Task[None] | None = None
        self._random = random.Random()  # sampling, not secrets
        self._closed = False

    async def start(self) -> None:
        await self.refresh()
        self._refreshing = asyncio.create_task(self._keep_fresh(), name="imgclf-shadow-settings")

    async def close(self) -> None:
        """Copies still awaited are abandoned: nobody waits for them."""
        self._closed = True
        tasks = [self._refreshing, *self._tasks] if self._refreshing else list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()

    async def refresh(self) -> None:
        try:
            self.shadows = await self.store.read()
        except Exception as error:  # keep the last settings read: shadows are never urgent
            logger.warning("the shadow settings could not be read: %s", error)

    async def set(self, name: str, setting: ShadowSetting | None) -> None:
        await self.store.write(name, setting)
        await self.refresh()

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            await self.refresh()

    def offer(self, upload: AcceptedUpload, answer: Answer) -> None:
        """Maybe copy this upload to its model's candidate; never raises, never waits."""
        name = answer.model_id.rpartition("@")[0]
        shadow = self.shadows.get(name)
        # A cached answer took no model time, and the candidate's copy would compare nothing new.
        if self._closed or shadow is None or answer.cached or shadow.candidate == answer.model_id:
            return
        if self._random.random() >= shadow.fraction:
            return
        reason = self._no_room(name, shadow.candidate.rpartition("@")[0])
        if reason:
            self.metrics.shadow_dropped.labels(name, reason).inc()
            return
        task = asyncio.create_task(self._compare(name, shadow.candidate, upload.data, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _no_room(self, name: str, candidate_name: str) -> str:
        if len(self._tasks) >= self.settings.shadow_max_in_flight:
            return "in_flight"
        callers = self.queue.in_flight_for(name)
        if candidate_name != name:
            callers += self.queue.in_flight_for(candidate_name)
        # Callers still waiting mean the workers are not idle: a copy would slow them down.
        if callers > self.settings.shadow_max_waiting:
            return "load"
        # A few callers in a tight loop keep the workers as busy as many do.
        busy = self.queue.workers_busy()
        if busy is not None and busy > self.settings.shadow_max_busy:
            return "busy"
        return ""

    async def _compare(self, name: str, candidate: str, image: bytes, answer: Answer) -> None:
        candidate_name = candidate.rpartition("@")[0]
        try:
            waiting = await self.queue.depth(name)
            if candidate_name != name:
                waiting += await self.queue.depth(candidate_name)
            if waiting > self.settings.shadow_max_waiting:
                self._dropped(name, "backlog")
                return
            await self.queue.resolve(candidate_name)  # some worker serves it
            started = time.perf_counter()
            result = await self.queue.submit(
                image,
                top_k=max(5, self.settings.top_k),
                timeout_s=self.settings.timeout_for(candidate_name),
                model=candidate,
                counted=False,
            )
            latency_ms = (time.perf_counter() - started) * 1000
        except QueueFullError:
            self._dropped(name, "full")
            return
        except JobTimeoutError:
            self._dropped(name, "timeout")
            return
        except (QueueError, ModelError) as error:
            logger.info("no shadow copy of a %s upload to %s: %s", name, candidate, error)
            self._dropped(name, "unavailable")
            return
        except Exception:  # a copy's trouble is logged and counted, never anyone's error
            logger.exception("a shadow copy of a %s upload to %s failed", name, candidate)
            self._dropped(name, "error")
            return
        if not result.ok or not result.top_k:
            logger.info("the shadow candidate %s failed: %s", candidate, result.error)
            self._dropped(name, "failed")
            return
        row = comparison_row(
            name,
            answer.model_id,
            result.model_id or candidate,
            answer.top_k,
            result.top_k,
            answer.latency_ms,
            latency_ms,
        )
        self.metrics.shadow_comparisons.labels(
            name, row["candidate"], str(row["agreed"]).lower()
        ).inc()
        self.recorder.record(row)

    def _dropped(self, name: str, reason: str) -> None:
        self.metrics.shadow_dropped.labels(name, reason).inc()


TopK = list[tuple[str, float]]


def comparison_row(
    model: str,
    live: str,
    candidate: str,
    live_top_k: TopK,
    candidate_top_k: TopK,
    live_latency_ms: float,
    candidate_latency_ms: float,
) -> dict[str, Any]:
    """The ``shadow_comparisons`` row: top-1 agreement, labels both top-5 lists hold, the
    candidate's top-1 score minus the live one's, and each side's latency."""
    (live_label, live_score), (candidate_label, candidate_score) = live_top_k[0], candidate_top_k[0]
    overlap = {label for label, _ in live_top_k[:5]} & {label for label, _ in candidate_top_k[:5]}
    return {
        "model": model,
        "live": live,
        "candidate": candidate,
        "agreed": live_label == candidate_label,
        "top5_overlap": len(overlap),
        "score_difference": candidate_score - live_score,
        "live_latency_ms": round(live_latency_ms, 3),
        "candidate_latency_ms": round(candidate_latency_ms, 3),
    }
