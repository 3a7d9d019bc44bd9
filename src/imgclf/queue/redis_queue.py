"""The API's side of the Redis queue: jobs into their model's stream, answers back on this
process's own.

One listener task per process reads the reply stream and wakes the waiting requests by job
id; requests never poll. A bounded connection pool keeps Redis connections fixed under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from imgclf.logs import current_request_id
from imgclf.model.repository import ModelCatalogue
from imgclf.queue.base import (
    JobResult,
    JobTimeoutError,
    QueueFullError,
    QueueUnavailableError,
    new_job_id,
)
from imgclf.queue.keys import KEPT_JOBS_PER_OWNER, RESULT_TTL_S, RedisKeys
from imgclf.queue.models import ModelStatus
from imgclf.queue.redis_models import RedisModels
from imgclf.tracing import current_traceparent

logger = logging.getLogger(__name__)

# XADD to KEYS[1] only while that stream is shorter than its cap and the images of every job
# stream (KEYS: each model's), this one included, fit their byte budget: ARGV[9] bytes, and
# never more than half of Redis's maxmemory, so that images, whichever models they are sent
# to, can never fill Redis and make it evict (or refuse) what the API keeps there beside them:
# login throttles, job owners, answers, heartbeats. One round trip, no race.
# Answers: the entry's id; false when the stream is full; 0 when the bytes are.
_BOUNDED_XADD = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local budget = tonumber(ARGV[9])
local info = redis.pcall('INFO', 'memory')
if type(info) == 'string' then
  local maxmemory = tonumber(string.match(info, 'maxmemory:(%d+)'))
  if maxmemory and maxmemory > 0 then budget = math.min(budget, maxmemory / 2) end
end
local held = 0
for _, stream in ipairs(KEYS) do
  held = held + (redis.call('MEMORY', 'USAGE', stream, 'SAMPLES', '0') or 0)
end
if held + string.len(ARGV[3]) > budget then return 0 end
return redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'image', ARGV[3], 'deadline', ARGV[4],
                  'top_k', ARGV[5], 'reply', ARGV[6], 'enqueued_at', ARGV[7], 'ttl', ARGV[8],
                  'request_id', ARGV[10], 'traceparent', ARGV[11], 'model', ARGV[12])
"""

# An async job's owner, kept ARGV[2] seconds, and its place in the owner's list (KEYS[2]):
# past ARGV[4] jobs, the owner's oldest are forgotten, answer (ARGV[5] .. id) and owner
# (ARGV[6] .. id). One account queuing jobs at 54 a second left 128 MB of answers in Redis an
# hour, where they could make it evict the login counts.
_KEEP_JOB = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[2])
for _ = 1, redis.call('LLEN', KEYS[2]) - tonumber(ARGV[4]) do
  local oldest = redis.call('LPOP', KEYS[2])
  redis.call('DEL', ARGV[5] .. oldest, ARGV[6] .. oldest)
end
"""


class RedisQueue:
    def __init__(
        self,
        url: str,
        *,
        max_pending: int,
        max_queue_length: int,
        max_queue_bytes: int = 256 * 2**20,
        max_connections: int = 32,
        keys: RedisKeys | None = None,
        read_catalogue: Callable[[], ModelCatalogue | None] = lambda: None,
        default_model: str = "efficientnet-lite0",
        promote_timeout_s: float = 120.0,
    ) -> None:
        self.url = url
        self.max_pending = max_pending
        self.max_queue_length = max_queue_length
        self.max_queue_bytes = max_queue_bytes
        self.keys = keys or RedisKeys()
        self.instance = uuid.uuid4().hex[:12]
        self.reply_stream = self.keys.replies(self.instance)
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=2.0,
            socket_connect_timeout=1.0,
            socket_timeout=5.0,
            # A pooled connection left from before a Redis restart fails once on first use;
            # one retry on a fresh connection keeps that from becoming a caller's 503.
            retry_on_error=[RedisConnectionError],
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        # The listener blocks in XREAD, so it gets a connection of its own.
        self._listener_redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=10.0
        )
        self._bounded_xadd = self._redis.register_script(_BOUNDED_XADD)
        self._keep_job = self._redis.register_script(_KEEP_JOB)
        self.models = RedisModels(
            self._redis,
            url,
            self.keys,
            read_catalogue=read_catalogue,
            default=default_model,
            promote_timeout_s=promote_timeout_s,
        )
        self._waiting: dict[str, asyncio.Future[JobResult]] = {}
        self._awaited = Counter[str]()  # jobs awaited here, by model name
        self._listener: asyncio.Task[None] | None = None
        self._model_id: str | None = None
        self._closed = False

    async def start(self) -> None:
        self._closed = False
        self._listener = asyncio.create_task(self._listen(), name="imgclf-reply-listener")

    async def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(QueueUnavailableError("the service is shutting down"))
        with contextlib.suppress(RedisError):
            await self._redis.delete(self.reply_stream)
        await self._redis.aclose()
        await self._listener_redis.aclose()
        await self._pool.aclose()

    async def submit(
        self,
        image: bytes,
        *,
        top_k: int,
        timeout_s: float,
        job_id: str | None = None,
        keep_result_s: int | None = None,
        model: str = "",
        counted: bool = True,
    ) -> JobResult:
        if self._closed:
            raise QueueUnavailableError("the service is shutting down")
        name = model.rpartition("@")[0]
        awaited = self._awaited if counted else Counter[str]()
        if awaited[name] >= self.max_pending:
            raise QueueFullError(f"{self._awaited[name]} images are already waiting; retry shortly")
        job_id = job_id or new_job_id()
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self._waiting[job_id] = future
        awaited[name] += 1
        try:
            await self._enqueue(model, job_id, image, top_k, timeout_s, keep_result_s, counted)
            return await self._await_answer(job_id, future, timeout_s)
        finally:
            self._waiting.pop(job_id, None)
            awaited[name] -= 1

    async def _enqueue(
        self,
        model: str,
        job_id: str,
        image: bytes,
        top_k: int,
        timeout_s: float,
        keep_result_s: int | None,
        counted: bool,
    ) -> None:
        """Add the job to its model's stream, within the stream's length and the byte budget
        all job streams share; QueueFullError or QueueUnavailableError otherwise."""
        name = model.rpartition("@")[0]
        now = time.time()
        # Uncounted work (shadow copies) only enters a stream less than half full, so that it
        # leaves the rest of the stream's room to callers.
        stream_cap = self.max_queue_length if counted else self.max_queue_length // 2
        try:
            added = await self._bounded_xadd(
                keys=[self.keys.jobs(name)]
                + [self.keys.jobs(other) for other in self.models.names() if other != name],
                args=[
                    stream_cap,
                    job_id,
                    image,
                    repr(now + timeout_s),
                    top_k,
                    self.reply_stream,
                    repr(now),
                    keep_result_s or max(60, int(timeout_s * 6)),
                    self.max_queue_bytes,
                    current_request_id.get(),
                    current_traceparent(),
                    model,
                ],
            )
        except RedisError as error:
            raise _unreachable(error) from None
        if added is None:
            raise QueueFullError(f"{self.max_queue_length} images are queued; retry shortly")
        if added == 0:
            raise QueueFullError("the queued images fill their memory; retry shortly", 2)

    async def _await_answer(
        self, job_id: str, future: asyncio.Future[JobResult], timeout_s: float
    ) -> JobResult:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            # A missed notice may have left the answer stored; if Redis is away or slow now,
            # the deadline has passed all the same: 504, never a 500 or a longer wait.
            try:
                stored = await asyncio.wait_for(self._read_stored(job_id), 1.0)
            except (RedisError, TimeoutError):
                stored = None
            if stored is not None:
                return stored
            raise JobTimeoutError(f"no answer within {timeout_s:g} s") from None

    def workers_busy(self) -> float | None:
        """What the workers' last heartbeats said (read at most twice a second, by requests)."""
        return self.models.workers_busy()

    async def stored_result(self, job_id: str) -> JobResult | None:
        try:
            return await self._read_stored(job_id)
        except RedisError as error:
            raise _unreachable(error) from None

    async def record_result(self, result: JobResult) -> None:
        try:
            await self._redis.set(
                self.keys.result(result.job_id), result.to_json(), ex=RESULT_TTL_S
            )
        except RedisError as error:
            raise _unreachable(error) from None

    async def remember_owner(self, job_id: str, owner_id: int, ttl_s: int) -> None:
        try:
            await self._keep_job(
                keys=[self.keys.owner(job_id), self.keys.jobs_of(owner_id)],
                args=[
                    owner_id,
                    ttl_s,
                    job_id,
                    KEPT_JOBS_PER_OWNER,
                    self.keys.result(""),
                    self.keys.owner(""),
                ],
            )
        except RedisError as error:
            raise _unreachable(error) from None

    async def job_owner(self, job_id: str) -> int | None:
        try:
            owner = await self._redis.get(self.keys.owner(job_id))
        except RedisError as error:
            raise _unreachable(error) from None
        return int(owner) if owner is not None else None

    async def readiness(self) -> dict[str, Any]:
        try:
            await self._redis.ping()
            reports = await self.models.reports(fresh=True)
        except RedisError as error:
            logger.warning("readiness: Redis unreachable: %s", error)
            return {"queue": "unavailable", "workers": 0, "model": "unknown"}
        loaded = sorted({ref for report in reports for ref in report.loaded})
        self._model_id = ", ".join(loaded) or None
        return {
            "queue": "ok",
            "workers": len(reports),
            "model": ", ".join(loaded) if loaded else "no worker has loaded a model",
        }

    async def depth(self, name: str | None = None) -> int:
        try:
            if name is not None:
                return int(await self._redis.xlen(self.keys.jobs(name)))
            names = {n for r in await self.models.reports() for n in r.serves}
            return sum([int(await self._redis.xlen(self.keys.jobs(n))) for n in names])
        except RedisError:
            return 0

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def in_flight_for(self, name: str) -> int:
        return self._awaited[name]

    @property
    def default_model(self) -> str:
        return self.models.default_model

    async def resolve(self, name: str | None) -> str:
        try:
            return await self.models.resolve(name)
        except RedisError as error:
            raise _unreachable(error) from None

    async def model_statuses(self) -> list[ModelStatus]:
        try:
            return await self.models.statuses(self.depth)
        except RedisError as error:
            raise _unreachable(error) from None

    async def promote(self, name: str, version: int) -> ModelStatus:
        try:
            return await self.models.promote(name, version, self.depth)
        except RedisError as error:
            raise _unreachable(error) from None

    @property
    def model_id(self) -> str | None:
        return self._model_id

    async def _read_stored(self, job_id: str) -> JobResult | None:
        raw = await self._redis.get(self.keys.result(job_id))
        return JobResult.from_json(raw) if raw is not None else None

    def _resolve(self, result: JobResult) -> None:
        future = self._waiting.get(result.job_id)
        if future is not None and not future.done():
            future.set_result(result)

    async def _listen(self) -> None:
        last_id = "0-0"
        backoff = 0.1
        recovering = False
        while not self._closed:
            try:
                if recovering:
                    # Notices sent while we were cut off may be gone: read the stored answers.
                    await self._recover_missed()
                    recovering = False
                replies: Any = await self._listener_redis.xread(
                    {self.reply_stream: last_id}, count=500, block=1000
                )
                backoff = 0.1
                for _stream, entries in replies:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        self._resolve(JobResult.from_json(fields[b"result"]))
                if replies:
                    await self._listener_redis.xtrim(self.reply_stream, minid=last_id)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                logger.warning("reply listener lost Redis (%s); retrying in %.1f s", error, backoff)
                recovering = True
                await asyncio.sleep(backoff)  # reconnect backoff, not a request-path poll
                backoff = min(backoff * 2, 2.0)
            except Exception:
                logger.exception("reply listener failed; restarting it")
                await asyncio.sleep(backoff)

    async def _recover_missed(self) -> None:
        for job_id in list(self._waiting):
            stored = await self._read_stored(job_id)
            if stored is not None:
                self._resolve(stored)


def _unreachable(error: RedisError) -> QueueUnavailableError:
    """What callers are told: that the queue is away, not where it lives or what it said
    (Redis errors name its host and port); the log keeps the details."""
    logger.warning("the job queue is unreachable: %s", error)
    return QueueUnavailableError("the job queue is unreachable")
