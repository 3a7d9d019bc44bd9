"""Attempt windows kept in Redis, and the addresses accounts logged in from, so every API
process and replica counts and knows them together.

Without it, each process has its own budget: N processes behind a load balancer give an
attacker N times the tries. Each window is a sorted set of attempt tokens scored by Redis's own
clock (so replicas with drifting clocks agree). One Lua script checks every window of an
attempt and counts it in all of them, or in none: Redis runs a script whole, so attempts from
many replicas at once cannot all pass a budget that has room for a few.

This process's own counts are kept too. If Redis cannot be reached they decide, so an outage
weakens the throttle to its in-process form, never to nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from imgclf.api.auth.throttle import (
    Attempt,
    AttemptsRefused,
    Budget,
    WindowCounter,
    seconds_to_wait,
)

logger = logging.getLogger(__name__)

# KEYS: the windows. ARGV: the attempt's token, then each window's limit and length in ms.
# Answers {0, 0} once counted, else {the milliseconds until every window has room, the index
# of the window that waits longest}.
ADMIT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local wait, spent = 0, 0
for i, key in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local freeing = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local until_free = tonumber(freeing[2]) + window - now
    if until_free > wait then
      wait, spent = until_free, i
    end
  end
end
if wait > 0 then
  return {wait, spent}
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, ARGV[2 * i + 1])
end
return {0, 0}
"""


class RedisWindowCounter:
    def __init__(self, url: str, local: WindowCounter, *, prefix: str = "imgclf:attempts") -> None:
        self.local = local
        self.prefix = prefix
        # Logins beyond the pool wait for a connection: a pool that refused them instead (as
        # redis-py's default one does past 100 at once) would let a burst of guesses fall back
        # to each process's own, smaller count.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=16, timeout=2.0, socket_connect_timeout=1.0, socket_timeout=1.0
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._admit = self._redis.register_script(ADMIT)

    async def close(self) -> None:
        await self._redis.aclose()

    def _keys(self, budgets: Sequence[Budget]) -> list[str]:
        return [f"{self.prefix}:{budget.key}" for budget in budgets]

    async def admit(self, budgets: Sequence[Budget]) -> Attempt:
        attempt = await self.local.admit(budgets)
        windows: list[str | int] = [attempt.token]
        for budget in budgets:
            windows += [budget.limit, math.ceil(budget.window_s * 1000)]
        try:
            wait_ms, spent = await self._admit(keys=self._keys(attempt.budgets), args=windows)
        except (RedisError, OSError) as error:
            logger.warning("attempt windows: Redis unreachable (%s); counting in process", error)
            return attempt
        if int(wait_ms) > 0:
            await self.local.give_back(attempt, attempt.budgets)
            what = attempt.budgets[int(spent) - 1].what  # Lua counts from 1
            raise AttemptsRefused(seconds_to_wait(int(wait_ms) / 1000), what)
        return attempt

    async def remember(self, key: str, ttl_s: float) -> None:
        await self.local.remember(key, ttl_s)
        try:
            await self._redis.set(f"{self.prefix}:{key}", 1, px=math.ceil(ttl_s * 1000))
        except (RedisError, OSError) as error:
            logger.warning("remembered clients: Redis unreachable (%s); kept in process", error)

    async def remembers(self, key: str) -> bool:
        try:
            return bool(await self._redis.exists(f"{self.prefix}:{key}"))
        except (RedisError, OSError) as error:
            logger.warning("remembered clients: Redis unreachable (%s); asked in process", error)
            return await self.local.remembers(key)

    async def give_back(self, attempt: Attempt, budgets: Sequence[Budget]) -> None:
        await self.local.give_back(attempt, budgets)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in self._keys(budgets):
                    pipe.zrem(key, attempt.token)
                await pipe.execute()
        except (RedisError, OSError) as error:
            logger.warning("attempt windows: Redis unreachable (%s); given back in process", error)
