"""The batching worker with the real model behind a real in-process queue."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from imgclf.model.bundle import load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.images import ImageLimits
from imgclf.queue.base import Job, JobResult, JobTimeoutError, QueueUnavailableError
from imgclf.queue.local import LocalQueue
from imgclf.worker import batching
from imgclf.worker.batching import BatchingWorker
from tests.security.hostile_files import jpeg_with_repeated_scans
from tests.support import DOG_JPEG

DOG = DOG_JPEG.read_bytes()


class OneModel:
    """One classifier for every job, whatever version it names."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    def classifier_for(self, ref: str) -> Classifier:
        return self.classifier


@pytest.fixture(scope="module")
def classifier(model_dir: Path) -> Classifier:
    return Classifier(load_bundle(model_dir), threads=1)


def run_with_worker(
    classifier: Classifier, images: list[bytes], *, start_late: bool = False, timeout_s: float = 10
) -> list[JobResult | BaseException]:
    """Submit ``images`` concurrently; with ``start_late`` they are all queued before the
    worker starts, so it finds them waiting together."""

    async def scenario() -> list[JobResult | BaseException]:
        queue = LocalQueue(max_pending=64)
        await queue.start()
        worker = BatchingWorker(
            queue, OneModel(classifier), ImageLimits(), max_batch_size=16, max_batch_wait_ms=0
        )
        if not start_late:
            worker.start()
        tasks = [
            asyncio.create_task(queue.submit(image, top_k=3, timeout_s=timeout_s))
            for image in images
        ]
        if start_late:
            await asyncio.sleep(0.05)
            worker.start()
        try:
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await queue.close()
            await asyncio.to_thread(worker.stop)

    return asyncio.run(scenario())


def test_jobs_waiting_together_run_as_one_batch_with_the_single_answers(
    classifier: Classifier,
) -> None:
    single = run_with_worker(classifier, [DOG])[0]
    together = run_with_worker(classifier, [DOG] * 8, start_late=True)

    assert isinstance(single, JobResult)
    assert single.batch_size == 1
    for result in together:
        assert isinstance(result, JobResult)
        assert result.batch_size == 8
        assert result.top_k[0][0] == "Eskimo_dog"
        assert result.top_k[0][1] == pytest.approx(single.top_k[0][1], abs=1e-5)


def test_a_bad_image_fails_alone_in_its_batch(classifier: Classifier) -> None:
    images = [DOG, b"not an image at all", DOG[:2500], DOG]
    results = run_with_worker(classifier, images, start_late=True)

    good, garbage, truncated, good_again = results
    assert isinstance(good, JobResult)
    assert good.ok
    assert isinstance(good_again, JobResult)
    assert good_again.ok
    assert isinstance(garbage, JobResult)
    assert not garbage.ok
    assert garbage.status_code == 400
    assert isinstance(truncated, JobResult)
    assert (truncated.ok, truncated.status_code) == (False, 400)
    assert "could not be decoded" in (truncated.error or "")


def test_expired_jobs_are_dropped_not_computed(classifier: Classifier) -> None:
    async def scenario() -> tuple[BaseException | JobResult, int]:
        queue = LocalQueue(max_pending=8)
        await queue.start()
        outcome: BaseException | JobResult
        try:
            outcome = await queue.submit(DOG, top_k=1, timeout_s=0.05)
        except JobTimeoutError as error:
            outcome = error
        worker = BatchingWorker(
            queue, OneModel(classifier), ImageLimits(), max_batch_size=4, max_batch_wait_ms=0
        )
        worker.start()
        await asyncio.sleep(0.3)
        await queue.close()
        await asyncio.to_thread(worker.stop)
        return outcome, worker.jobs_done

    outcome, computed = asyncio.run(scenario())
    assert isinstance(outcome, JobTimeoutError)
    assert computed == 0


def test_a_job_whose_deadline_passes_in_its_batch_is_not_decoded(
    classifier: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images in a batch are decoded one after another: one that waited behind a costly one
    past its deadline (its caller has had a 504) is dropped, as one past it when the batch was
    taken is: neither decoded nor answered for nobody."""
    costly = jpeg_with_repeated_scans(2_000, 100)  # 0.2-0.9 s to decode
    decoded: list[bytes] = []
    preprocess = classifier.preprocess

    def recording(image: bytes, limits: ImageLimits) -> Any:
        decoded.append(image)
        return preprocess(image, limits)

    monkeypatch.setattr(classifier, "preprocess", recording)

    dropped: list[str] = []

    class Dropping(LocalQueue):
        def discard(self, jobs: list[Job]) -> None:
            dropped.extend(job.id for job in jobs)

    async def scenario() -> tuple[list[JobResult | BaseException], int]:
        queue = Dropping(max_pending=8)
        await queue.start()
        worker = BatchingWorker(
            queue, OneModel(classifier), ImageLimits(), max_batch_size=4, max_batch_wait_ms=0
        )
        first = asyncio.create_task(queue.submit(costly, top_k=1, timeout_s=30))
        await asyncio.sleep(0)  # queued first, decoded first
        hurried = asyncio.create_task(queue.submit(DOG, top_k=1, timeout_s=0.15))
        await asyncio.sleep(0.05)
        worker.start()  # finds both waiting: one batch
        try:
            answers = await asyncio.gather(first, hurried, return_exceptions=True)
        finally:
            await queue.close()
            await asyncio.to_thread(worker.stop)
        return answers, worker.jobs_done

    (slow, hurried), computed = asyncio.run(scenario())
    assert isinstance(slow, JobResult)
    assert (slow.ok, slow.batch_size) == (True, 1)
    assert isinstance(hurried, JobTimeoutError)
    assert decoded == [costly]
    assert (len(dropped), computed) == (1, 1)


def test_stop_finishes_the_batches_already_taken(classifier: Classifier) -> None:
    async def scenario() -> list[JobResult | BaseException]:
        queue = LocalQueue(max_pending=32)
        await queue.start()
        worker = BatchingWorker(
            queue, OneModel(classifier), ImageLimits(), max_batch_size=4, max_batch_wait_ms=0
        )
        tasks = [asyncio.create_task(queue.submit(DOG, top_k=1, timeout_s=20)) for _ in range(6)]
        await asyncio.sleep(0.02)
        worker.start()
        await asyncio.sleep(0.01)
        await asyncio.to_thread(worker.stop)
        # Jobs no worker took are failed at shutdown, never left hanging.
        await queue.close()
        return await asyncio.gather(*tasks, return_exceptions=True)

    started = time.monotonic()
    results = asyncio.run(scenario())
    answered = [r for r in results if isinstance(r, JobResult)]
    assert len(answered) >= 4, results
    assert all(r.ok for r in answered)
    assert all(isinstance(r, JobResult | QueueUnavailableError) for r in results), results
    assert time.monotonic() - started < 15


class _FailingOnce(LocalQueue):
    """A queue whose first take fails unexpectedly, as a bug in a source would."""

    def __init__(self) -> None:
        super().__init__(max_pending=8)
        self.takes = 0

    def take(self, max_jobs: int, max_wait_s: float, block_s: float) -> list[Job]:
        self.takes += 1
        if self.takes == 1:
            raise RuntimeError("the source broke once")
        return super().take(max_jobs, max_wait_s, block_s)


def test_a_lane_outlives_a_source_that_fails_and_takes_again(
    classifier: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "TAKE_RETRY_S", 0.05)

    async def scenario() -> tuple[JobResult, bool, int]:
        queue = _FailingOnce()
        await queue.start()
        worker = BatchingWorker(
            queue,
            OneModel(classifier),
            ImageLimits(),
            max_batch_size=4,
            max_batch_wait_ms=0,
            lanes=2,
        )
        worker.start()
        try:
            result = await queue.submit(DOG, top_k=1, timeout_s=20)
            return result, worker.alive, queue.takes
        finally:
            worker.stop_taking()
            await queue.close()
            await asyncio.to_thread(worker.stop)

    result, alive, takes = asyncio.run(scenario())
    assert result.ok
    assert result.top_k[0][0] == "Eskimo_dog"
    assert alive
    assert takes >= 2


def test_idle_lanes_all_stop_while_one_waits_for_a_job(classifier: Classifier) -> None:
    async def scenario() -> list[threading.Thread]:
        queue = LocalQueue(max_pending=8)
        await queue.start()
        worker = BatchingWorker(
            queue,
            OneModel(classifier),
            ImageLimits(),
            max_batch_size=4,
            max_batch_wait_ms=0,
            lanes=3,
        )
        worker.start()
        await asyncio.sleep(0.1)  # one lane waits in take(), the others for their turn
        worker.stop_taking()
        await queue.close()
        await asyncio.to_thread(worker.stop, 5.0)
        return worker._lane_threads

    lanes = asyncio.run(scenario())
    assert len(lanes) == 3
    assert not any(lane.is_alive() for lane in lanes)


def test_lanes_share_the_cores_when_busy_and_a_lone_job_gets_them_all(model_dir: Path) -> None:
    classifier = Classifier(load_bundle(model_dir), threads=2, single_thread_runs=True)
    calls: list[tuple[str, float, float, bool]] = []
    classify = classifier.classify

    def recording_classify(batch: Any, top_k: int = 5, *, single_thread: bool = False) -> Any:
        started = time.perf_counter()
        answers = classify(batch, top_k, single_thread=single_thread)
        calls.append((threading.current_thread().name, started, time.perf_counter(), single_thread))
        return answers

    classifier.classify = recording_classify  # type: ignore[method-assign]

    async def scenario() -> tuple[list[JobResult], JobResult]:
        queue = LocalQueue(max_pending=64)
        await queue.start()
        worker = BatchingWorker(
            queue,
            OneModel(classifier),
            ImageLimits(),
            max_batch_size=2,
            max_batch_wait_ms=0,
            lanes=2,
        )
        worker.start()
        try:
            burst = await asyncio.gather(
                *(queue.submit(DOG, top_k=1, timeout_s=30) for _ in range(24))
            )
            lone = await queue.submit(DOG, top_k=1, timeout_s=30)
            return burst, lone
        finally:
            await queue.close()
            await asyncio.to_thread(worker.stop)

    burst, lone = asyncio.run(scenario())

    assert all(result.top_k[0][0] == "Eskimo_dog" for result in [*burst, lone])
    *burst_calls, lone_call = calls
    assert {name for name, *_ in burst_calls} == {"imgclf-lane-0", "imgclf-lane-1"}
    overlapping = [
        single
        for _name, started, _ended, single in burst_calls
        if any(other_start < started < other_end for _, other_start, other_end, _ in burst_calls)
    ]
    assert overlapping, "the two lanes never ran the model at the same time"
    # A call made while another lane works runs on one thread: the lanes share the cores.
    assert all(overlapping)
    assert lone_call[3] is False  # alone, it spreads over all the model's threads
