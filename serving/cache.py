"""Prediction cache and per-key rate limits on Litestar stores, shared through Redis when it is there.

With ``settings.redis_url`` the cache is a :class:`~litestar.stores.redis.RedisStore` and the
rate limit a Redis counter per key and minute, so every worker and every server process
sees the same figures. Without it (or while Redis does not answer) a
:class:`~litestar.stores.memory.MemoryStore` and a counter in this process stand in: a
request never fails because Redis is away, and Redis is tried again after
``RETRY_SECONDS``, so sharing comes back by itself.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from dataclasses import dataclass, field

from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from serving import metrics

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
CACHE_SECONDS = 3600
NAMESPACE = "price-platform"
_PRICE = struct.Struct("<d")


def redis_client(url: str) -> Redis:
    """An asyncio Redis client that fails fast (no retries, short timeouts) instead of stalling requests."""
    return Redis.from_url(
        url, socket_timeout=0.25, socket_connect_timeout=0.25, retry=Retry(NoBackoff(), 0), health_check_interval=0
    )


def cache_key(model_version: str, canonical_record: bytes) -> str:
    """Cache key of one record's prediction by one model version."""
    return f"{model_version}:{hashlib.blake2b(canonical_record, digest_size=16).hexdigest()}"


@dataclass
class SharedStore:
    """The cache and the rate-limit counters, in Redis when possible and in this process otherwise."""

    redis: Redis | None
    limit_per_minute: int
    local_cache: MemoryStore = field(default_factory=MemoryStore)
    _shared_cache: Store | None = None
    _counters: dict[tuple[str, int], int] = field(default_factory=dict)
    _down_until: float = 0.0

    def __post_init__(self) -> None:
        if self.redis is not None:
            self._shared_cache = RedisStore(self.redis, namespace=f"{NAMESPACE}:cache")

    @property
    def cache_store(self) -> Store:
        """The store predictions are cached in when Redis answers."""
        return self._shared_cache or self.local_cache

    def _shared(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        if time.monotonic() >= self._down_until:
            metrics.SHARED_STORE_FALLBACKS.inc()
            log.warning("Redis unavailable (%s): cache and rate limits are per process for now", error)
        self._down_until = time.monotonic() + RETRY_SECONDS

    async def get_price(self, key: str) -> float | None:
        value = None
        if self._shared():
            try:
                value = await self._shared_cache.get(key)  # type: ignore[union-attr]
            except (RedisError, OSError) as error:
                self._failed(error)
                value = await self.local_cache.get(key)
        else:
            value = await self.local_cache.get(key)
        return None if value is None else _PRICE.unpack(value)[0]

    async def set_price(self, key: str, price: float) -> None:
        value = _PRICE.pack(price)
        if self._shared():
            try:
                await self._shared_cache.set(key, value, expires_in=CACHE_SECONDS)  # type: ignore[union-attr]
                return
            except (RedisError, OSError) as error:
                self._failed(error)
        await self.local_cache.set(key, value, expires_in=CACHE_SECONDS)

    async def allow(self, identity: str) -> tuple[bool, int]:
        """Count one request of ``identity`` in this minute; (allowed, seconds until the window ends)."""
        now = time.time()
        window = int(now // 60)
        retry_after = 60 - int(now % 60)
        if self._shared():
            key = f"{NAMESPACE}:ratelimit:{identity}:{window}"
            try:
                async with self.redis.pipeline(transaction=True) as pipe:  # type: ignore[union-attr]
                    count, _ = await pipe.incr(key).expire(key, 120).execute()
                return count <= self.limit_per_minute, retry_after
            except (RedisError, OSError) as error:
                self._failed(error)
        for old in [k for k in self._counters if k[1] < window]:
            del self._counters[old]
        count = self._counters.get((identity, window), 0) + 1
        self._counters[(identity, window)] = count
        return count <= self.limit_per_minute, retry_after

    async def publish(self, channel: str, message: str) -> bool:
        """Announce ``message`` on a Redis channel; False when there is no Redis to tell."""
        if self.redis is None:
            return False
        try:
            await self.redis.publish(channel, message)
            return True
        except (RedisError, OSError) as error:
            self._failed(error)
            return False

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
