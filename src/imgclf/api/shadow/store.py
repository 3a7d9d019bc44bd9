"""Where the shadow settings persist, like the live versions: a JSON file in the data folder
(embedded) or a Redis hash (Redis mode), so that every API process reads the same."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis

from imgclf.queue.keys import RedisKeys, redis_text
from imgclf.settings import Settings


@dataclass(frozen=True, slots=True)
class ShadowSetting:
    candidate: str  # name@version
    fraction: float


def _parse(raw: Any) -> ShadowSetting | None:
    try:
        return ShadowSetting(str(raw["candidate"]), float(raw["fraction"]))
    except (KeyError, TypeError, ValueError):
        return None


class ShadowStore(Protocol):
    async def read(self) -> dict[str, ShadowSetting]:
        """Every model's shadow setting, by model name."""
        ...

    async def write(self, name: str, setting: ShadowSetting | None) -> None:
        """Set ``name``'s shadow; None stops it."""
        ...

    async def close(self) -> None: ...


class FileShadowStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def read(self) -> dict[str, ShadowSetting]:
        return await asyncio.to_thread(self._read)

    def _read(self) -> dict[str, ShadowSetting]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        parsed = {str(name): _parse(value) for name, value in raw.items()}
        return {name: setting for name, setting in parsed.items() if setting is not None}

    async def write(self, name: str, setting: ShadowSetting | None) -> None:
        await asyncio.to_thread(self._write, name, setting)

    def _write(self, name: str, setting: ShadowSetting | None) -> None:
        settings = self._read()
        settings.pop(name, None)
        if setting is not None:
            settings[name] = setting
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Replaced atomically: another process reads the old file or the new one, never half.
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".shadow-")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump({n: asdict(s) for n, s in settings.items()}, file, indent=2, sort_keys=True)
        os.replace(temporary, self.path)

    async def close(self) -> None:
        return None


class RedisShadowStore:
    def __init__(self, url: str, keys: RedisKeys | None = None) -> None:
        self.key = (keys or RedisKeys()).shadow
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)

    async def read(self) -> dict[str, ShadowSetting]:
        raw = await self._redis.hgetall(self.key)
        parsed = {redis_text(name): _parse(_json(value)) for name, value in raw.items()}
        return {name: setting for name, setting in parsed.items() if setting is not None}

    async def write(self, name: str, setting: ShadowSetting | None) -> None:
        if setting is None:
            await self._redis.hdel(self.key, name)
        else:
            await self._redis.hset(self.key, name, json.dumps(asdict(setting)))

    async def close(self) -> None:
        await self._redis.aclose()


def _json(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def build_shadow_store(settings: Settings) -> ShadowStore:
    if settings.queue_url:
        return RedisShadowStore(settings.queue_url)
    return FileShadowStore(settings.data_dir / "shadow-models.json")
