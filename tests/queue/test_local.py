"""The in-process queue keeps results and job owners for as long as it is told, no longer."""

from __future__ import annotations

import asyncio

from imgclf.queue.base import JobResult
from imgclf.queue.local import LocalQueue


def test_results_and_owners_are_kept_for_their_time_only() -> None:
    async def scenario() -> list[object]:
        queue = LocalQueue(max_pending=4)
        await queue.start()
        submitted = asyncio.create_task(
            queue.submit(b"image", top_k=1, timeout_s=5, job_id="short", keep_result_s=1)
        )
        (job,) = await asyncio.to_thread(queue.take, 1, 0.0, 5.0)
        queue.complete([JobResult(job.id, ok=True, top_k=[("dog", 0.9)], model_id="m")])
        await submitted
        await queue.remember_owner("short", 7, ttl_s=1)
        await queue.remember_owner("long", 8, ttl_s=3600)
        before = [await queue.stored_result("short") is not None, await queue.job_owner("short")]
        await asyncio.sleep(1.1)
        after = [await queue.stored_result("short"), await queue.job_owner("short")]
        await queue.close()
        return [*before, *after, await queue.job_owner("long")]

    assert asyncio.run(scenario()) == [True, 7, None, None, 8]


def test_a_failure_stored_for_a_job_is_not_replaced_by_its_late_answer() -> None:
    async def scenario() -> JobResult | None:
        queue = LocalQueue(max_pending=4)
        await queue.start()
        submitted = asyncio.create_task(
            queue.submit(b"image", top_k=1, timeout_s=5, job_id="job", keep_result_s=60)
        )
        (job,) = await asyncio.to_thread(queue.take, 1, 0.0, 5.0)
        # Its caller gives up and stores why (as an API process does when it stops) ...
        submitted.cancel()
        await queue.record_result(JobResult("job", ok=False, status_code=503, error="stopped"))
        # ... before the worker's answer comes.
        queue.complete([JobResult(job.id, ok=True, top_k=[("dog", 0.9)], model_id="m")])
        stored = await queue.stored_result("job")
        await queue.close()
        return stored

    stored = asyncio.run(scenario())
    assert stored is not None
    assert (stored.ok, stored.error) == (False, "stopped")


def test_one_owner_queuing_without_end_pushes_out_only_its_own_old_jobs() -> None:
    async def scenario() -> tuple[list[int | None], list[bool]]:
        queue = LocalQueue(max_pending=4, kept_results=100, kept_per_owner=3)
        await queue.start()
        await queue.remember_owner("bob's", 2, ttl_s=3600)
        await queue.record_result(JobResult("bob's", ok=True, top_k=[("dog", 0.9)], model_id="m"))
        for number in range(200):  # past the shared bound too
            await queue.remember_owner(f"alice's {number}", 1, ttl_s=3600)
            await queue.record_result(
                JobResult(f"alice's {number}", ok=True, top_k=[("cat", 0.8)], model_id="m")
            )
        owners = [await queue.job_owner(job) for job in ("bob's", "alice's 0", "alice's 199")]
        kept = [await queue.stored_result(job) is not None for job in ("bob's", "alice's 196")]
        await queue.close()
        return owners, kept

    owners, kept = asyncio.run(scenario())
    assert owners == [2, None, 1]
    assert kept == [True, False]


def test_owners_who_queue_nothing_more_leave_no_bookkeeping_behind() -> None:
    async def scenario() -> int:
        queue = LocalQueue(max_pending=4, kept_results=10, kept_per_owner=5)
        await queue.start()
        for owner in range(100):  # each queues a few, then never again
            for number in range(3):
                await queue.remember_owner(f"{owner}-{number}", owner, ttl_s=3600)
        tracked = sum(len(jobs) for jobs in queue._jobs_of.values())
        await queue.close()
        return tracked

    # At most twice the shared bound (10), not three ids for each of the 100 owners.
    assert asyncio.run(scenario()) <= 20
