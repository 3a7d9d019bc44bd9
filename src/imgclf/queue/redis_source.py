"""The worker's side of the Redis queue: a consumer in the group of workers of each model it
serves (one job stream per model, read together in one blocking call).

Jobs are taken with XREADGROUP and acknowledged (and deleted, so the stream stays small) only
after their answer is stored. Entries a dead worker held are taken over with XCLAIM once they
have sat idle past the visibility timeout and their worker's heartbeat has lapsed: a live
worker's jobs are its own however long they take, so a slow image is never decoded twice at
once. An entry delivered too often, or one whose image ran out of decoding time, goes to the
dead-letter stream and its caller gets an error instead of waiting for its deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import RedisError, ResponseError

from imgclf.queue.base import Job, JobResult
from imgclf.queue.keys import DEAD_LETTER_MAXLEN, REPLY_STREAM_MAXLEN, RESULT_TTL_S, RedisKeys

logger = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]
# A job's place in Redis: its stream and entry id.
Place = tuple[str, bytes]
# Idle entries one takeover looks through: far more than the live workers hold at once.
RECLAIM_SCAN = 1000


def _ttl(fields: dict[bytes, bytes]) -> int:
    """How long the job's answer stays readable, as its caller asked (older entries: the hour)."""
    try:
        return int(fields.get(b"ttl", RESULT_TTL_S))
    except ValueError:
        return RESULT_TTL_S


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisJobSource:
    def __init__(
        self,
        url: str,
        *,
        models: list[str],
        visibility_timeout_s: float,
        max_deliveries: int,
        keys: RedisKeys | None = None,
        name: str | None = None,
    ) -> None:
        self.keys = keys or RedisKeys()
        self.models = list(models)
        self.streams = [self.keys.jobs(model) for model in self.models]
        self.name = name or consumer_name()
        self.visibility_timeout_ms = int(visibility_timeout_s * 1000)
        self.max_deliveries = max_deliveries
        self.model_id = ""
        self._redis = redis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=max(10.0, visibility_timeout_s)
        )
        # job id -> (its place, reply stream, seconds its answer stays readable)
        self._held: dict[str, tuple[Place, str, int]] = {}
        self._lock = threading.Lock()
        self._next_reclaim = 0.0
        self._group_ready = False

    def close(self) -> None:
        self._redis.close()

    # Taking -------------------------------------------------------------------------------

    def take(self, max_jobs: int, max_wait_s: float, block_s: float) -> list[Job]:
        # A job is this worker's from the moment it is read (others take over only a silent
        # worker's): those read before a failure are returned, or nothing would ever answer them.
        jobs: list[Job] = []
        try:
            self._ensure_group()
            self._reclaim(max_jobs, jobs)
            if jobs:
                return jobs
            jobs.extend(self._read(max_jobs, int(block_s * 1000)))
            wait_until = time.monotonic() + max_wait_s
            while jobs and len(jobs) < max_jobs:
                remaining_ms = int((wait_until - time.monotonic()) * 1000)
                if remaining_ms <= 0:
                    break
                more = self._read(max_jobs - len(jobs), remaining_ms)
                if not more:
                    break
                jobs.extend(more)
            return jobs
        except ResponseError as error:
            if "NOGROUP" in str(error):  # Redis restarted without our group: make it again
                self._group_ready = False
            elif not jobs:
                raise
            else:
                logger.warning("worker %s: %s; running the jobs read before", self.name, error)
            return jobs
        except (RedisError, OSError) as error:
            logger.warning("worker %s cannot reach Redis: %s", self.name, error)
            self._group_ready = False
            if not jobs:
                time.sleep(min(block_s, 1.0))  # worker thread backoff while Redis is away
            return jobs

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        for stream in self.streams:
            try:
                self._redis.xgroup_create(stream, self.keys.group, id="0", mkstream=True)
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self._group_ready = True

    def _read(self, count: int, block_ms: int) -> list[Job]:
        response: Any = self._redis.xreadgroup(
            self.keys.group,
            self.name,
            dict.fromkeys(self.streams, ">"),
            count=count,
            block=max(block_ms, 1),
        )
        jobs: list[Job] = []
        for stream, items in response or []:
            jobs.extend(self._accept(stream.decode(), items))
        return jobs

    def _reclaim(self, count: int, jobs: list[Job]) -> None:
        """Add to ``jobs`` up to ``count`` entries taken over from silent workers, stream by
        stream (so that those of one stream stay in ``jobs`` if the next fails)."""
        now = time.monotonic()
        if now < self._next_reclaim:
            return
        self._next_reclaim = now + self.visibility_timeout_ms / 2000
        for stream in self.streams:
            jobs.extend(self._reclaim_from(stream, count - len(jobs)))
            if len(jobs) >= count:
                break

    def _reclaim_from(self, stream: str, count: int) -> list[Job]:
        idle: list[dict[str, Any]] = self._redis.xpending_range(
            stream,
            self.keys.group,
            min="-",
            max="+",
            count=RECLAIM_SCAN,
            idle=self.visibility_timeout_ms,
        )
        deliveries = {
            entry["message_id"]: int(entry["times_delivered"]) + 1
            for entry in self._orphans(idle)[:count]
        }
        if not deliveries:
            return []
        # min_idle_time again: of two workers claiming the same entry, only the first gets it.
        claimed: Any = self._redis.xclaim(
            stream,
            self.keys.group,
            self.name,
            min_idle_time=self.visibility_timeout_ms,
            message_ids=list(deliveries),
        )
        fresh: list[Entry] = []
        for entry_id, fields in claimed:
            if not fields:  # answered and deleted by its worker in the meantime
                continue
            if deliveries.get(entry_id, 1) > self.max_deliveries:
                self._dead_letter((stream, entry_id), fields)
            else:
                fresh.append((entry_id, fields))
        if fresh:
            logger.warning(
                "worker %s took over %d jobs from a silent worker", self.name, len(fresh)
            )
        return self._accept(stream, fresh)

    def _orphans(self, idle: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The idle entries nobody works on: their worker's heartbeat has lapsed, or they are
        this worker's own and it no longer holds them (their answer was lost with Redis)."""
        me = self.name.encode()
        with self._lock:
            held = {entry_id for (_stream, entry_id), _reply, _ttl in self._held.values()}
        others = sorted({entry["consumer"] for entry in idle} - {me})
        pipe = self._redis.pipeline(transaction=False)
        for consumer in others:
            pipe.exists(self.keys.worker(consumer.decode()))
        alive = {consumer for consumer, found in zip(others, pipe.execute(), strict=True) if found}
        return [
            entry
            for entry in idle
            if (entry["consumer"] == me and entry["message_id"] not in held)
            or (entry["consumer"] != me and entry["consumer"] not in alive)
        ]

    def _dead_letter(self, place: Place, fields: dict[bytes, bytes]) -> None:
        job_id = fields.get(b"id", b"?").decode()
        logger.error(
            "job %s failed %d deliveries; moved to %s",
            job_id,
            self.max_deliveries,
            self.keys.dead_letters,
            extra={"request_id": fields.get(b"request_id", b"").decode(errors="replace")},
        )
        result = JobResult(
            job_id,
            ok=False,
            status_code=500,
            model_id=fields.get(b"model", b"").decode(errors="replace"),
            error="This image could not be processed; it was set aside.",
        )
        dead: dict[Any, Any] = {k: v for k, v in fields.items() if k != b"image"}

        def fill(pipe: redis.client.Pipeline) -> None:
            pipe.xadd(self.keys.dead_letters, dead, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
            self._store_and_notify(pipe, result, fields.get(b"reply", b"").decode(), _ttl(fields))
            self._acknowledge(pipe, [place])

        self._execute(fill)

    def _accept(self, stream: str, entries: list[Entry]) -> list[Job]:
        jobs: list[Job] = []
        for entry_id, fields in entries:
            try:
                job = Job(
                    id=fields[b"id"].decode(),
                    image=fields[b"image"],
                    deadline=float(fields[b"deadline"]),
                    top_k=int(fields[b"top_k"]),
                    enqueued_at=float(fields[b"enqueued_at"]),
                    request_id=fields.get(b"request_id", b"").decode(errors="replace"),
                    model=fields.get(b"model", b"").decode(errors="replace"),
                    traceparent=fields.get(b"traceparent", b"").decode(errors="replace"),
                )
            except (KeyError, ValueError):
                logger.error("dropping malformed queue entry %r", entry_id)
                self._redis.xack(stream, self.keys.group, entry_id)
                self._redis.xdel(stream, entry_id)
                continue
            place = (stream, entry_id)
            with self._lock:
                self._held[job.id] = (place, fields.get(b"reply", b"").decode(), _ttl(fields))
            jobs.append(job)
        return jobs

    # Answering ----------------------------------------------------------------------------

    def complete(self, results: list[JobResult]) -> None:
        held = self._holding(results)

        def fill(pipe: redis.client.Pipeline) -> None:
            for result, (_place, reply, ttl) in held:
                self._store_and_notify(pipe, result, reply, ttl)
            # Acknowledge only after the answers are stored: a crash before this point means
            # the jobs are taken over and answered again, never lost.
            self._acknowledge(pipe, [place for _, (place, _, _) in held if place])

        self._execute(fill)
        self._release(results)

    def set_aside(self, results: list[JobResult]) -> None:
        """Answer these failures and move their jobs to the dead-letter stream at once, never to
        be tried again (an image that ran out of decoding time would only do so again)."""
        held = self._holding(results)
        for result, _entry in held:
            logger.error("job %s set aside: %s", result.job_id, result.error)

        def fill(pipe: redis.client.Pipeline) -> None:
            for result, (place, reply, ttl) in held:
                record: dict[Any, Any] = {
                    "id": result.job_id,
                    "worker": self.name,
                    "error": result.error or "",
                }
                pipe.xadd(
                    self.keys.dead_letters, record, maxlen=DEAD_LETTER_MAXLEN, approximate=True
                )
                self._store_and_notify(pipe, result, reply, ttl)
                self._acknowledge(pipe, [place] if place else [])

        self._execute(fill)
        self._release(results)

    def discard(self, jobs: list[Job]) -> None:
        with self._lock:
            places = [self._held[job.id][0] for job in jobs if job.id in self._held]
        if places:
            self._execute(lambda pipe: self._acknowledge(pipe, places))
        with self._lock:
            for job in jobs:
                self._held.pop(job.id, None)

    def _holding(
        self, results: list[JobResult]
    ) -> list[tuple[JobResult, tuple[Place | None, str, int]]]:
        """Each result with its entry, reply stream and answer lifetime (while still held)."""
        unknown: tuple[Place | None, str, int] = (None, "", RESULT_TTL_S)
        with self._lock:
            return [(result, self._held.get(result.job_id, unknown)) for result in results]

    def _release(self, results: list[JobResult]) -> None:
        # Held until acknowledged, not just until answered: a job this worker holds is never
        # taken over, even by this worker.
        with self._lock:
            for result in results:
                self._held.pop(result.job_id, None)

    def _acknowledge(self, pipe: redis.client.Pipeline, places: list[Place]) -> None:
        for stream in {stream for stream, _entry_id in places}:
            entry_ids = [entry_id for at, entry_id in places if at == stream]
            pipe.xack(stream, self.keys.group, *entry_ids)
            pipe.xdel(stream, *entry_ids)

    def _store_and_notify(
        self, pipe: redis.client.Pipeline, result: JobResult, reply: str, ttl: int
    ) -> None:
        payload = result.to_json()
        # Only where no result is: an API process that stopped before this answer came stored
        # that the job failed, and its owner must keep reading that (nothing recorded it).
        pipe.set(self.keys.result(result.job_id), payload, ex=ttl, nx=True)
        if reply:
            pipe.xadd(reply, {"result": payload}, maxlen=REPLY_STREAM_MAXLEN, approximate=True)
            pipe.expire(reply, RESULT_TTL_S)

    def _execute(self, fill: Callable[[redis.client.Pipeline], None]) -> None:
        for attempt in range(3):
            try:
                pipe = self._redis.pipeline(transaction=False)
                fill(pipe)
                pipe.execute()
                return
            except (RedisError, OSError) as error:
                logger.warning("storing results failed (%s), attempt %d", error, attempt + 1)
                time.sleep(0.2 * (attempt + 1))
        logger.error("results lost with Redis; their jobs will be taken over and redone")

    # Liveness -----------------------------------------------------------------------------

    def heartbeat(self, ttl_s: float, report: dict[str, Any]) -> None:
        """Alive for ``ttl_s`` more, serving what ``report`` says (JSON: the models it serves,
        the versions it has loaded, the repository's entries for them)."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self.keys.worker(self.name), json.dumps(report), px=int(ttl_s * 1000))
            pipe.sadd(self.keys.workers, self.name)
            pipe.execute()
        except (RedisError, OSError) as error:
            logger.warning("heartbeat failed: %s", error)

    def model_versions(self) -> tuple[dict[str, int], dict[str, int]]:
        """The live and the wanted (being promoted) version of each model, as Redis holds them."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.live)
        pipe.hgetall(self.keys.wanted)
        live, wanted = pipe.execute()
        return _versions(live), _versions(wanted)

    def claim_live(self, name: str, version: int) -> None:
        """Set the live version of a model that has none yet (the first worker to start)."""
        self._redis.hsetnx(self.keys.live, name, version)

    def announce_loaded(self, loaded: list[str]) -> None:
        """Wake a promotion waiting for this worker to load its version."""
        with contextlib.suppress(RedisError, OSError):
            self._redis.xadd(
                self.keys.model_events,
                {"worker": self.name, "loaded": ",".join(loaded)},
                maxlen=1000,
                approximate=True,
            )

    def retire(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            pipe = self._redis.pipeline(transaction=False)
            pipe.delete(self.keys.worker(self.name))
            pipe.srem(self.keys.workers, self.name)
            pipe.execute()


def _versions(raw: dict[bytes, bytes]) -> dict[str, int]:
    found = {}
    for name, version in raw.items():
        with contextlib.suppress(ValueError):
            found[name.decode()] = int(version)
    return found
