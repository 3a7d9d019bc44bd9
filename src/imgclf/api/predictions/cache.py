"""Answers to a user's earlier identical uploads by (model id, user, content hash), bounded in
size and age.

Per user, not shared: a shared entry told a caller (by ``cached: true``, and by a faster
answer) that someone else had uploaded the same picture. What a user re-uploads is still
answered without the model; another user's copy of a picture costs one model call more.
"""

from __future__ import annotations

import contextlib
import json
from typing import Protocol

import redis.asyncio as aioredis
from cachetools import TTLCache
from redis.exceptions import RedisError

from imgclf.queue.keys import RedisKeys
from imgclf.settings import Settings

TopK = list[tuple[str, float]]


class PredictionCache(Protocol):
    async def get(self, model_id: str, owner: int, digest: str) -> TopK | None: ...

    async def put(self, model_id: str, owner: int, digest: str, top_k: TopK) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """In-process LRU with a time to live (``cachetools.TTLCache``): the embedded mode's cache."""

    def __init__(self, max_items: int, ttl_s: float) -> None:
        self._items: TTLCache[tuple[str, int, str], TopK] = TTLCache(max_items, ttl_s)

    async def get(self, model_id: str, owner: int, digest: str) -> TopK | None:
        return self._items.get((model_id, owner, digest))

    async def put(self, model_id: str, owner: int, digest: str, top_k: TopK) -> None:
        self._items[(model_id, owner, digest)] = top_k

    async def close(self) -> None:
        self._items.clear()


class RedisCache:
    """Shared by every API process; entries expire by TTL. A Redis outage only means misses."""

    def __init__(self, url: str, ttl_s: int, keys: RedisKeys | None = None) -> None:
        self.ttl_s = ttl_s
        self.keys = keys or RedisKeys()
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=8, timeout=1.0, socket_connect_timeout=0.5, socket_timeout=1.0
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)

    async def get(self, model_id: str, owner: int, digest: str) -> TopK | None:
        try:
            raw = await self._redis.get(self.keys.cache(model_id, owner, digest))
        except RedisError:
            return None
        if raw is None:
            return None
        return [(str(label), float(score)) for label, score in json.loads(raw)]

    async def put(self, model_id: str, owner: int, digest: str, top_k: TopK) -> None:
        with contextlib.suppress(RedisError):
            await self._redis.set(
                self.keys.cache(model_id, owner, digest), json.dumps(top_k), ex=self.ttl_s
            )

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()


def build_cache(settings: Settings) -> PredictionCache | None:
    """Shared in Redis when the queue is Redis, in process otherwise; None when turned off."""
    if not settings.cache:
        return None
    if settings.queue_url:
        return RedisCache(settings.queue_url, ttl_s=settings.cache_ttl_s)
    return MemoryCache(max_items=settings.cache_size, ttl_s=settings.cache_ttl_s)
