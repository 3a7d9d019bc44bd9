"""The worker's side of the Redis queue, several consumers on one real Redis: who may take over
a job that sits idle, and what happens to jobs that must not run again."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from imgclf.queue.base import Job, JobResult
from imgclf.queue.keys import RedisKeys
from imgclf.queue.redis_source import RedisJobSource

KEYS = RedisKeys()
VISIBILITY_S = 0.2


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def workers(redis_url: str) -> Iterator[dict[str, RedisJobSource]]:
    """Three consumers of one group, each with its heartbeat: live workers."""
    sources = {
        name: RedisJobSource(
            redis_url, models=MODELS, visibility_timeout_s=VISIBILITY_S, max_deliveries=3, name=name
        )
        for name in ("a", "b", "c")
    }
    for source in sources.values():
        source.heartbeat(30, {})
    yield sources
    for source in sources.values():
        source.close()


MODELS = ["efficientnet-lite0"]


def queue_job(client: redis.Redis, job_id: str = "job-1") -> None:
    client.xadd(
        KEYS.jobs("efficientnet-lite0"),
        {
            "id": job_id,
            "image": b"bytes",
            "deadline": repr(time.time() + 60),
            "top_k": 5,
            "reply": "",
            "enqueued_at": repr(time.time()),
            "ttl": 60,
        },
    )


def take(source: RedisJobSource) -> list[Job]:
    """What one call of a worker's lane gets (it looks for idle jobs every 0.1 s here)."""
    return source.take(max_jobs=4, max_wait_s=0, block_s=0.05)


def pending(client: redis.Redis) -> list[tuple[str, int]]:
    entries = client.xpending_range(
        KEYS.jobs("efficientnet-lite0"), KEYS.group, min="-", max="+", count=10
    )
    return [(entry["consumer"].decode(), entry["times_delivered"]) for entry in entries]


def test_a_live_workers_job_stays_its_own_however_long_it_takes(
    redis_client: redis.Redis, workers: dict[str, RedisJobSource]
) -> None:
    a, b = workers["a"], workers["b"]
    queue_job(redis_client)
    assert [job.id for job in take(a)] == ["job-1"]
    time.sleep(VISIBILITY_S * 3)  # idle well past the visibility timeout

    assert take(a) == []  # not by its own other lane
    assert take(b) == []  # nor by another live worker
    assert pending(redis_client) == [("a", 1)]

    a.complete([JobResult("job-1", ok=True, top_k=[("x", 1.0)])])
    assert pending(redis_client) == []
    assert redis_client.xlen(KEYS.jobs("efficientnet-lite0")) == 0


def test_jobs_read_before_redis_fails_are_run_not_dropped(
    redis_client: redis.Redis, workers: dict[str, RedisJobSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that waits to fill (max wait > 0) reads again; if Redis fails then, the jobs of
    the first read are already this worker's, and no one else would ever answer them."""
    a = workers["a"]
    queue_job(redis_client)
    real_read, reads = a._read, []

    def read_then_fail(count: int, block_ms: int) -> list[Job]:
        reads.append(count)
        if len(reads) > 1:  # Redis goes away while the batch waits for more
            raise redis.ConnectionError("Connection closed by server.")
        return real_read(count, block_ms)

    monkeypatch.setattr(a, "_read", read_then_fail)
    assert [job.id for job in a.take(max_jobs=4, max_wait_s=0.5, block_s=0.05)] == ["job-1"]
    assert len(reads) == 2

    a.complete([JobResult("job-1", ok=True, top_k=[("x", 1.0)])])
    assert pending(redis_client) == []


def test_a_silent_workers_job_is_taken_over_by_one_worker_only(
    redis_client: redis.Redis, workers: dict[str, RedisJobSource]
) -> None:
    a, b, c = workers["a"], workers["b"], workers["c"]
    queue_job(redis_client)
    assert len(take(a)) == 1
    a.retire()  # its heartbeat is gone, as when the process dies and the key expires
    time.sleep(VISIBILITY_S * 2)

    taken = [take(b), take(c)]
    assert sorted(len(jobs) for jobs in taken) == [0, 1]
    assert pending(redis_client) in ([("b", 2)], [("c", 2)])


def test_a_job_delivered_too_often_is_set_aside_with_an_answer(
    redis_client: redis.Redis, workers: dict[str, RedisJobSource], redis_url: str
) -> None:
    queue_job(redis_client)
    for name in ("dead-1", "dead-2", "dead-3"):  # each takes it, then dies without a heartbeat
        doomed = RedisJobSource(
            redis_url, models=MODELS, visibility_timeout_s=VISIBILITY_S, max_deliveries=3, name=name
        )
        assert len(take(doomed)) == 1
        doomed.close()
        time.sleep(VISIBILITY_S * 2)

    assert take(workers["a"]) == []
    assert pending(redis_client) == []
    [(_entry, dead)] = redis_client.xrange(KEYS.dead_letters)
    assert dead[b"id"] == b"job-1"
    answer = JobResult.from_json(redis_client.get(KEYS.result("job-1")) or b"")
    assert (answer.ok, answer.status_code) == (False, 500)


def test_set_aside_answers_and_dead_letters_at_once_never_to_be_retried(
    redis_client: redis.Redis, workers: dict[str, RedisJobSource]
) -> None:
    a = workers["a"]
    queue_job(redis_client)
    [job] = take(a)
    failure = JobResult(job.id, ok=False, status_code=413, error="It took too long.")
    a.set_aside([failure])

    assert pending(redis_client) == []
    assert redis_client.xlen(KEYS.jobs("efficientnet-lite0")) == 0
    [(_entry, dead)] = redis_client.xrange(KEYS.dead_letters)
    assert (dead[b"id"], dead[b"worker"], dead[b"error"]) == (b"job-1", b"a", b"It took too long.")
    stored = JobResult.from_json(redis_client.get(KEYS.result("job-1")) or b"")
    assert (stored.status_code, stored.error) == (413, "It took too long.")
    time.sleep(VISIBILITY_S * 2)
    assert take(workers["b"]) == []


def test_the_api_finds_live_workers_without_scanning_the_answers_kept(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Heartbeats are found through the set of worker names: thousands of answers kept in
    Redis cost nothing to look past (a scan of the keys walked all of them, twice a second),
    and a worker that died without retiring drops out once its heartbeat expires."""
    import asyncio

    import redis.asyncio as aioredis

    from imgclf.queue.redis_models import RedisModels

    answers = redis_client.pipeline(transaction=False)
    for number in range(5000):
        answers.set(KEYS.result(f"job-{number}"), "{}", ex=60)
    answers.execute()
    sources = [
        RedisJobSource(redis_url, models=MODELS, visibility_timeout_s=1, max_deliveries=3, name=n)
        for n in ("alive", "retiring", "dying")
    ]
    for source in sources:  # each says its own name where a worker names the models it serves
        source.heartbeat(30, {"serves": [source.name], "loaded": []})
    # Then it "dies": no more heartbeats.
    sources[2].heartbeat(0.2, {"serves": ["dying"], "loaded": []})

    async def workers_seen() -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        models = RedisModels(
            client,
            redis_url,
            KEYS,
            read_catalogue=lambda: None,
            default="efficientnet-lite0",
            promote_timeout_s=1,
        )
        try:
            return sorted(
                name for report in await models.reports(fresh=True) for name in report.serves
            )
        finally:
            await client.aclose()

    try:
        assert asyncio.run(workers_seen()) == ["alive", "dying", "retiring"]
        sources[1].retire()
        time.sleep(0.3)
        assert asyncio.run(workers_seen()) == ["alive"]
        assert redis_client.smembers(KEYS.workers) == {b"alive"}
    finally:
        for source in sources:
            source.close()
