"""The embedded mode's prediction cache: per user, bounded in size and in age."""

from __future__ import annotations

import asyncio
import time

from imgclf.api.predictions.cache import MemoryCache

TOP_K = [("Eskimo_dog", 0.62), ("Siberian_husky", 0.2)]


def test_an_entry_is_answered_to_its_owner_only() -> None:
    cache = MemoryCache(max_items=8, ttl_s=60)
    asyncio.run(cache.put("model", 1, "digest", TOP_K))
    assert asyncio.run(cache.get("model", 1, "digest")) == TOP_K
    assert asyncio.run(cache.get("model", 2, "digest")) is None
    assert asyncio.run(cache.get("other-model", 1, "digest")) is None


def test_the_least_recently_used_entry_goes_first_when_full() -> None:
    cache = MemoryCache(max_items=2, ttl_s=60)
    asyncio.run(cache.put("model", 1, "a", TOP_K))
    asyncio.run(cache.put("model", 1, "b", TOP_K))
    asyncio.run(cache.get("model", 1, "a"))  # "b" is now the least recently used
    asyncio.run(cache.put("model", 1, "c", TOP_K))
    assert asyncio.run(cache.get("model", 1, "a")) == TOP_K
    assert asyncio.run(cache.get("model", 1, "b")) is None
    assert asyncio.run(cache.get("model", 1, "c")) == TOP_K


def test_an_entry_expires_after_its_time_to_live() -> None:
    cache = MemoryCache(max_items=8, ttl_s=0.05)
    asyncio.run(cache.put("model", 1, "digest", TOP_K))
    time.sleep(0.1)
    assert asyncio.run(cache.get("model", 1, "digest")) is None
