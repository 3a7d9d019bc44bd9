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

import asyncio
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from imgclf.api.auth.throttle import (
    Attempt,
    AttemptsRefused,
    Budget,
    KnownClients,
    WindowCounter,
    seconds_to_wait,
)

logger = logging.getLogger(__name__)

# KEYS: the windows, then the account's known clients (a hash: client -> until when, in ms).
# ARGV: the attempt's token, the client ('' for none), then each window's limit, length in ms
# and whom it applies to (0 every client, 1 strangers, 2 known clients). Answers {0, 0, known
# for ms} once counted, else {the milliseconds until every window has room, the index of the
# window that waits longest, known for ms}; known for ms is 0 for a stranger.
ADMIT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local known, known_for = 0, 0
if ARGV[2] ~= '' then
  local until_ms = redis.call('HGET', KEYS[#KEYS], ARGV[2])
  if until_ms and tonumber(until_ms) > now then
    known, known_for = 1, tonumber(until_ms) - now
  end
end
local wait, spent = 0, 0
local counted = {}
for i = 1, #KEYS - 1 do
  local applies = tonumber(ARGV[3 * i + 2])
  if applies == 0 or (applies == 1 and known == 0) or (applies == 2 and known == 1) then
    local key, limit, window = KEYS[i], tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
    table.insert(counted, i)
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
end
if wait > 0 then
  return {wait, spent, known_for}
end
for _, i in ipairs(counted) do
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[3 * i + 1])
end
return {0, 0, known_for}
"""

# An attempt this process counted while Redis could not be reached, told to Redis once it can
# be. KEYS: its windows. ARGV: its token, when it was made (ms, this host's clock), then each
# window's length in ms.
CATCH_UP = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local made = math.min(tonumber(ARGV[2]), now)
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 + i])
  if made > now - window then
    redis.call('ZADD', key, made, ARGV[1])
    redis.call('PEXPIRE', key, window)
  end
end
return 0
"""

# KEYS: the windows to take the attempt out of, then the account's known clients. ARGV: the
# attempt's token, the client to know from now on ('' for none), how long in ms, and how many
# clients an account keeps (the newest).
GIVE_BACK = """
for i = 1, #KEYS - 1 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
if ARGV[2] == '' then
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local record, keep = KEYS[#KEYS], tonumber(ARGV[3])
redis.call('HSET', record, ARGV[2], now + keep)
local entries = redis.call('HGETALL', record)
local kept = {}
for j = 1, #entries, 2 do
  if tonumber(entries[j + 1]) <= now then
    redis.call('HDEL', record, entries[j])
  else
    table.insert(kept, {entries[j], tonumber(entries[j + 1])})
  end
end
local most = tonumber(ARGV[4])
if #kept > most then
  table.sort(kept, function(a, b) return a[2] < b[2] end)
  for j = 1, #kept - most do
    redis.call('HDEL', record, kept[j][1])
  end
end
redis.call('PEXPIRE', record, keep)
return 0
"""
# After Redis fails, this process counts on its own for this long before it tries again: a
# Redis that hangs would otherwise hold every login for its timeouts.
RETRY_AFTER_S = 5.0
# What this process counted or gave back while Redis could not be reached, told to Redis when
# it can be again (the oldest dropped beyond this): else every outage, or a burst that made
# one, would give each process a fresh budget that Redis then gives again.
MAX_MISSED = 10_000

Call = tuple[Any, list[str], list[str | int]]  # a script, its keys and its arguments


class RedisWindowCounter:
    def __init__(self, url: str, local: WindowCounter, *, prefix: str = "imgclf:attempts") -> None:
        self.local = local
        self.prefix = prefix
        # Logins beyond the pool wait for a connection (2 s at most), where a pool that
        # refused them at once (redis-py's default one, past 100) let a burst of guesses fall
        # back to each process's own, smaller count.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=16, timeout=2.0, socket_connect_timeout=1.0, socket_timeout=1.0
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._admit = self._redis.register_script(ADMIT)
        self._give_back = self._redis.register_script(GIVE_BACK)
        self._catch_up = self._redis.register_script(CATCH_UP)
        self._down_until = 0.0
        self._missed: deque[Call] = deque(maxlen=MAX_MISSED)
        self._catching_up = asyncio.Lock()

    async def close(self) -> None:
        await self._redis.aclose()

    def _windows(self, budgets: Sequence[Budget]) -> list[str]:
        return [f"{self.prefix}:{budget.key}" for budget in budgets]

    def _keys(self, budgets: Sequence[Budget], known: KnownClients | None) -> list[str]:
        """The windows, then the account's known clients (a key never read without one)."""
        record = known.record if known is not None else "no-record"
        return [*self._windows(budgets), f"{self.prefix}:{record}"]

    def _unreachable(self, error: Exception, meanwhile: str) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER_S
        logger.warning("attempt windows: Redis unreachable (%s); %s", error, meanwhile)

    async def _reachable(self) -> bool:
        """Whether to ask Redis now; first, what it missed is told to it, in order, by one
        caller at a time (the others wait: they would count against windows it has not caught
        up with), in pipelined pieces (after a long outage, thousands of calls)."""
        if time.monotonic() < self._down_until:
            return False
        if not self._missed:
            return True
        async with self._catching_up:
            try:
                while self._missed and time.monotonic() >= self._down_until:
                    await self._tell(
                        [self._missed.popleft() for _ in range(min(500, len(self._missed)))]
                    )
            except (RedisError, OSError) as error:
                self._unreachable(error, "counting in process")
        return time.monotonic() >= self._down_until

    async def _tell(self, calls: list[Call]) -> None:
        """Run these missed calls in Redis; on failure, keep them first in line."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    await script(keys=keys, args=args, client=pipe)  # queued in the pipeline
                await pipe.execute()
        except (RedisError, OSError):
            self._missed.extendleft(reversed(calls))
            raise

    async def _admit_in_process(
        self, budgets: Sequence[Budget], known: KnownClients | None
    ) -> Attempt:
        attempt = await self.local.admit(budgets, known)
        if attempt.budgets:
            args: list[str | int] = [attempt.token, int(time.time() * 1000)]
            args += [math.ceil(budget.window_s * 1000) for budget in attempt.budgets]
            self._missed.append((self._catch_up, self._windows(attempt.budgets), args))
        return attempt

    async def admit(self, budgets: Sequence[Budget], known: KnownClients | None = None) -> Attempt:
        if not await self._reachable():
            return await self._admit_in_process(budgets, known)
        token = secrets.token_hex(8)
        args: list[str | int] = [token, known.client if known is not None else ""]
        for budget in budgets:
            args += [budget.limit, math.ceil(budget.window_s * 1000), budget.applies]
        try:
            wait_ms, spent, known_ms = await self._admit(keys=self._keys(budgets, known), args=args)
        except (RedisError, OSError) as error:
            self._unreachable(error, "counting in process")
            return await self._admit_in_process(budgets, known)
        if known is not None and int(known_ms) > 0:  # so that an outage does not forget it
            self.local.learn(known, int(known_ms) / 1000)
        if int(wait_ms) > 0:
            what = budgets[int(spent) - 1].what  # Lua counts from 1
            raise AttemptsRefused(seconds_to_wait(int(wait_ms) / 1000), what)
        # Counted here too, for the moments Redis cannot be reached.
        return self.local.admit_now(budgets, int(known_ms) > 0, token, force=True)

    async def give_back(
        self, attempt: Attempt, budgets: Sequence[Budget], remember: KnownClients | None = None
    ) -> None:
        await self.local.give_back(attempt, budgets, remember)
        args: list[str | int] = [attempt.token, "", 0, 0]
        if remember is not None:
            keep_ms = math.ceil(remember.keep_s * 1000)
            args = [attempt.token, remember.client, keep_ms, remember.most]
        keys = self._keys(budgets, remember)
        if not await self._reachable():
            self._missed.append((self._give_back, keys, args))
            return
        try:
            await self._give_back(keys=keys, args=args)
        except (RedisError, OSError) as error:
            self._unreachable(error, "given back in process")
            self._missed.append((self._give_back, keys, args))
