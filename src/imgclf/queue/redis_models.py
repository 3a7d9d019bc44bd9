"""The models as the API sees them in Redis mode: from the workers' heartbeats (which models
each serves, which versions it holds) and the live versions kept in Redis, which every API
process and worker reads, so they all agree.

A promotion sets the *wanted* version; the workers serving the model load and warm it beside
the live one, and the live version flips only when every one of them holds it. Until then, and
if they never do, requests go on with the live version.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from imgclf.model.repository import ModelCatalogue, ModelVersion
from imgclf.queue.keys import RedisKeys, redis_text
from imgclf.queue.models import (
    ModelStatus,
    ModelUnavailableError,
    PromotionError,
    UnknownModelError,
)

logger = logging.getLogger(__name__)
_NO_PATH = Path()  # the bundle lives on the worker's disk, not here
# The workers' heartbeats are read at most this often per process (a request reads them too).
REPORTS_MAX_AGE_S = 0.5


@dataclass(frozen=True, slots=True)
class WorkerReport:
    serves: list[str]
    loaded: list[str]
    versions: list[ModelVersion]
    # The share of its time spent on batches since its previous heartbeat (None: not said).
    busy: float | None = None


def parse_report(raw: bytes | str) -> WorkerReport:
    """A heartbeat's content; a worker of an older release (its model id only) serves nothing."""
    try:
        data: Any = json.loads(raw)
        versions = [
            ModelVersion(
                name=str(item["name"]),
                version=int(item["version"]),
                path=_NO_PATH,
                input_size=int(item["input_size"]),
                precision=str(item.get("precision") or "fp32"),
                top1_published=item.get("top1_published"),
            )
            for item in data.get("versions", [])
        ]
        busy = data.get("busy")
        return WorkerReport(
            [str(n) for n in data["serves"]],
            list(data["loaded"]),
            versions,
            float(busy) if isinstance(busy, int | float) else None,
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return WorkerReport([], [], [])


# KEYS[1]: the set of worker names; KEYS[i + 1]: the heartbeat key of ARGV[i]. A name leaves
# the set only if its heartbeat is still gone now: one that came back since it was read stays.
_FORGET_SILENT_WORKERS = """
for i, name in ipairs(ARGV) do
    if redis.call('EXISTS', KEYS[i + 1]) == 0 then
        redis.call('SREM', KEYS[1], name)
    end
end
return 0
"""


class RedisModels:
    def __init__(
        self,
        redis: aioredis.Redis,
        url: str,
        keys: RedisKeys,
        *,
        read_catalogue: Callable[[], ModelCatalogue | None],
        default: str,
        promote_timeout_s: float,
    ) -> None:
        self._redis = redis
        self._url = url
        self.keys = keys
        # The repository as this process sees it, if it sees one (read again to promote).
        self._read_catalogue = read_catalogue
        self.catalogue = read_catalogue()
        self.default_setting = default
        self.promote_timeout_s = promote_timeout_s
        self._reports: list[WorkerReport] = []
        self._read_at = 0.0
        self._promoting = asyncio.Lock()
        self._reading = asyncio.Lock()
        self._forget = redis.register_script(_FORGET_SILENT_WORKERS)

    def workers_busy(self) -> float | None:
        """The mean busy share the workers last reported (from the heartbeats read last)."""
        shares = [report.busy for report in self._reports if report.busy is not None]
        return sum(shares) / len(shares) if shares else None

    async def reports(self, *, fresh: bool = False) -> list[WorkerReport]:
        """The live workers' heartbeats (at most ``REPORTS_MAX_AGE_S`` old unless ``fresh``)."""
        asked_at = time.monotonic()
        if not fresh and asked_at - self._read_at <= REPORTS_MAX_AGE_S:
            return self._reports
        # One reading at a time: requests that find them stale together wait for the same one.
        async with self._reading:
            if self._read_at < asked_at and (fresh or asked_at - self._read_at > REPORTS_MAX_AGE_S):
                names = sorted(await self._redis.smembers(self.keys.workers))
                keys = [self.keys.worker(redis_text(name)) for name in names]
                values = await self._redis.mget(keys) if keys else []
                gone = [
                    (n, key) for n, key, value in zip(names, keys, values, strict=True) if not value
                ]
                if gone:  # heartbeats expired: workers that died without retiring
                    await self._forget(
                        keys=[self.keys.workers, *(key for _, key in gone)],
                        args=[name for name, _ in gone],
                    )
                self._reports = [parse_report(value) for value in values if value]
                self._read_at = time.monotonic()
        return self._reports

    def known(self, reports: list[WorkerReport]) -> dict[str, dict[int, ModelVersion]]:
        """Every version the repository here or any worker knows, by name."""
        known: dict[str, dict[int, ModelVersion]] = {}
        for report in reports:
            for entry in report.versions:
                known.setdefault(entry.name, {})[entry.version] = entry
        if self.catalogue is not None:
            for name, versions in self.catalogue.models.items():
                known.setdefault(name, {}).update(versions)
        return known

    def names(self) -> list[str]:
        """Every model known from the last heartbeats read and the repository here."""
        return sorted(self.known(self._reports))

    @property
    def default_model(self) -> str:
        names = self.known(self._reports)
        if self.default_setting in names or not names:
            return self.default_setting
        return min(names)

    async def live_version(self, name: str, versions: dict[int, ModelVersion]) -> int:
        """The live version; the newest when none was set yet (set then, for everyone)."""
        live = await self._redis.hget(self.keys.live, name)
        if live is None:
            await self._redis.hsetnx(self.keys.live, name, max(versions))
            live = await self._redis.hget(self.keys.live, name)
        return int(live) if live is not None else max(versions)

    async def resolve(self, name: str | None) -> str:
        """The live ``name@version``. With no worker alive at all (restarting, say) a known
        model's jobs wait in its stream as before; with workers alive, none of which serves
        the model, it is unavailable."""
        reports = await self.reports()
        known = self.known(reports)
        name = name or self.default_model
        if name not in known:
            if not known:  # no repository here and no worker to say what there is
                raise ModelUnavailableError(name, [])
            raise UnknownModelError(name, sorted(known))
        if reports and not any(name in report.serves for report in reports):
            raise ModelUnavailableError(name, sorted({n for r in reports for n in r.serves}))
        return f"{name}@{await self.live_version(name, known[name])}"

    async def statuses(self, depth: Callable[[str], Awaitable[int]]) -> list[ModelStatus]:
        reports = await self.reports()
        known = self.known(reports)
        return [await self._status(name, known[name], reports, depth) for name in sorted(known)]

    async def _status(
        self,
        name: str,
        versions: dict[int, ModelVersion],
        reports: list[WorkerReport],
        depth: Callable[[str], Awaitable[int]],
    ) -> ModelStatus:
        live = await self.live_version(name, versions)
        entry = versions.get(live) or versions[max(versions)]
        serving = [report for report in reports if name in report.serves]
        loaded = {ref for r in serving for ref in r.loaded if ref.rpartition("@")[0] == name}
        return ModelStatus(
            name=name,
            live_version=live,
            versions=sorted(versions),
            input_size=entry.input_size,
            precision=entry.precision,
            accuracy=entry.top1_published,
            default=name == self.default_model,
            workers=len(serving),
            queue_depth=await depth(name),
            loaded=sorted(loaded),
        )

    async def promote(
        self, name: str, version: int, depth: Callable[[str], Awaitable[int]]
    ) -> ModelStatus:
        async with self._promoting:
            # A version added to the repository since the start is known from now on.
            self.catalogue = await asyncio.to_thread(self._read_catalogue)
            reports = await self.reports(fresh=True)
            known = self.known(reports)
            if version not in known.get(name, {}):
                refs = [f"{n}@{v}" for n in sorted(known) for v in sorted(known[n])]
                raise UnknownModelError(f"{name}@{version}", refs)
            if not any(name in report.serves for report in reports):
                raise ModelUnavailableError(name, sorted({n for r in reports for n in r.serves}))
            await self._wait_until_loaded(name, version)
            await self._redis.hset(self.keys.live, name, version)
            await self._redis.hdel(self.keys.wanted, name)
            logger.info("%s@%d is live", name, version)
            return await self._status(name, known[name], await self.reports(fresh=True), depth)

    async def _wait_until_loaded(self, name: str, version: int) -> None:
        """Ask the workers serving ``name`` to load the version; return once all hold it.
        Woken by their notices, not by polling; a bounded wait, then PromotionError."""
        ref = f"{name}@{version}"
        events = aioredis.Redis.from_url(self._url, socket_timeout=5.0)
        try:
            newest: Any = await events.xrevrange(self.keys.model_events, count=1)
            seen = newest[0][0] if newest else b"0-0"
            await self._redis.hset(self.keys.wanted, name, version)
            deadline = time.monotonic() + self.promote_timeout_s
            while True:
                serving = [r for r in await self.reports(fresh=True) if name in r.serves]
                if serving and all(ref in report.loaded for report in serving):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                notices: Any = await events.xread(
                    {self.keys.model_events: seen}, block=int(min(left, 1.0) * 1000) or 1
                )
                for _stream, entries in notices:
                    seen = entries[-1][0]
        finally:
            await events.aclose()
        await self._redis.hdel(self.keys.wanted, name)
        raise PromotionError(
            f"The workers serving '{name}' did not load version {version} within "
            f"{self.promote_timeout_s:g} s; the live version has not changed"
        )
