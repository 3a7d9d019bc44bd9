"""What a Redis-mode API keeps of async jobs, against a real Redis: each owner's newest
``KEPT_JOBS_PER_OWNER`` answers and owners, no more.

One account queuing 8 by 8 pictures at 54 jobs a second left about 128 MB of answers and owners
in Redis an hour (658 bytes a job, kept an hour), where, past ``maxmemory``, they could make
Redis evict the login counts and other users' job owners."""

from __future__ import annotations

import asyncio

import redis

from imgclf.queue.base import JobResult
from imgclf.queue.keys import KEPT_JOBS_PER_OWNER, RedisKeys
from imgclf.queue.redis_queue import RedisQueue

ALICE, BOB = 1, 2


def test_an_owners_new_job_pushes_out_that_owners_oldest(redis_url: str) -> None:
    keys = RedisKeys()
    extra = 5

    async def queue_many() -> None:
        queue = RedisQueue(redis_url, max_pending=8, max_queue_length=8)
        try:
            await queue.remember_owner("bob-0", BOB, 3600)
            await queue.record_result(JobResult("bob-0", ok=True))
            for number in range(KEPT_JOBS_PER_OWNER + extra):
                job_id = f"alice-{number}"
                await queue.record_result(JobResult(job_id, ok=True))  # answered at once
                await queue.remember_owner(job_id, ALICE, 3600)
            assert await queue.job_owner("alice-0") is None
            assert await queue.stored_result("alice-0") is None
            assert await queue.job_owner(f"alice-{extra}") == ALICE
            assert await queue.job_owner("bob-0") == BOB  # another owner's are not touched
            assert await queue.stored_result("bob-0") is not None
        finally:
            await queue.close()

    asyncio.run(queue_many())
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.llen(keys.jobs_of(ALICE)) == KEPT_JOBS_PER_OWNER
        assert 0 < client.ttl(keys.jobs_of(ALICE)) <= 3600
        kept = client.keys(f"{keys.prefix}:result:alice-*")
        assert len(kept) == KEPT_JOBS_PER_OWNER
    finally:
        client.close()
