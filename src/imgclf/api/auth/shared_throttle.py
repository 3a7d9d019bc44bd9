"""Failed-login throttling kept in Redis, so every API process and replica counts together.

Without it, each process has its own budget: N processes behind a load balancer give an
attacker N times the tries. The rules are those of the in-process ``LoginThrottle``: a key keeps
its last ``limit`` failures (a sorted set scored by time); it is refused while it holds
``limit`` failures younger than the window. Keys name an HMAC of the email or address under the
secret key, so Redis holds neither, nor anything a dictionary of emails or addresses reverses.
If Redis cannot be reached, this process's own counts decide (they are always kept too), so an
outage weakens the throttle to its in-process form, never to nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from imgclf.api.auth.throttle import LoginThrottle

logger = logging.getLogger(__name__)


class RedisLoginThrottle:
    def __init__(
        self,
        url: str,
        local: LoginThrottle,
        *,
        key_secret: bytes,
        prefix: str = "imgclf:login-failures",
    ) -> None:
        self.local = local
        self.prefix = prefix
        self._key_secret = key_secret
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)

    async def close(self) -> None:
        await self._redis.aclose()

    def _keys(self, email: str, address: str) -> list[tuple[str, int]]:
        keys = []
        for kind, value in (("email", email), ("address", address)):
            digest = hmac.new(self._key_secret, value.encode(), hashlib.sha256).hexdigest()[:32]
            keys.append((f"{self.prefix}:{kind}:{digest}", self.local.limits[kind]))
        return keys

    async def retry_after(self, email: str, address: str) -> int | None:
        now = time.time()
        window = self.local.window_s
        keys = self._keys(email, address)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, _limit in keys:
                    pipe.zremrangebyscore(key, "-inf", now - window)
                    pipe.zcard(key)
                    pipe.zrange(key, 0, 0, withscores=True)
                replies = await pipe.execute()
        except (RedisError, OSError) as error:
            logger.warning("login throttle: Redis unreachable (%s); counting in process", error)
            return await self.local.retry_after(email, address)
        wait = 0.0
        for index, (_key, limit) in enumerate(keys):
            count, oldest = replies[3 * index + 1], replies[3 * index + 2]
            if count >= limit and oldest:
                wait = max(wait, float(oldest[0][1]) + window - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    async def record_failure(self, email: str, address: str) -> None:
        await self.local.record_failure(email, address)
        now = time.time()
        member = f"{now:.6f}-{secrets.token_hex(4)}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, limit in self._keys(email, address):
                    pipe.zadd(key, {member: now})
                    pipe.zremrangebyrank(key, 0, -(limit + 1))  # keep the last `limit`
                    pipe.expire(key, math.ceil(self.local.window_s) + 1)
                await pipe.execute()
        except (RedisError, OSError) as error:
            logger.warning("login throttle: Redis unreachable (%s); counted in process", error)
