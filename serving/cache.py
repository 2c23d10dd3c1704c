"""Prediction cache and per-key rate limits, shared through Redis when it is there.

With ``settings.redis_url`` cached prices live under ``price-platform:cache:<key>`` and the
rate limit is a Redis counter per key and minute, so every worker and every server process
sees the same figures. Without it (or while Redis does not answer) a bounded cache and a
counter in this process stand in: a request never fails because Redis is away, and Redis is
tried again after ``RETRY_SECONDS``, so sharing comes back by itself. The process counts every
request in its own counter too, Redis or not, so when Redis goes away in the middle of a
minute the requests this process already let through that minute still count.

Redis commands are not sent one request at a time: every command asked for during one turn
of the event loop (rate-limit counts, cache reads, cache writes) goes out in one pipeline
at the end of that turn, so concurrent requests share one round trip and the client's
per-call cost. A request waits for its counts and reads; cache writes are not waited for.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from serving import metrics

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
CACHE_SECONDS = 3600
#: Entries the in-process cache keeps (the oldest go first).
LOCAL_CACHE_ENTRIES = 100_000
NAMESPACE = "price-platform"
_PRICE = struct.Struct("<d")


def redis_client(url: str) -> Redis:
    """An asyncio Redis client that fails fast (no retries, short timeouts) instead of stalling requests."""
    return Redis.from_url(
        url, socket_timeout=0.25, socket_connect_timeout=0.25, retry=Retry(NoBackoff(), 0), health_check_interval=0
    )


def cache_key(model_name: str, model_version: str, canonical_record: bytes) -> str:
    """Cache key of one record's prediction by one registered model version."""
    return f"{model_name}:{model_version}:{hashlib.blake2b(canonical_record, digest_size=16).hexdigest()}"


class LocalCache:
    """Prices in this process: expire after ``CACHE_SECONDS``, at most ``capacity`` entries."""

    def __init__(self, capacity: int = LOCAL_CACHE_ENTRIES) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def get(self, key: str) -> float | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def set(self, key: str, price: float) -> None:
        self._entries[key] = (time.monotonic() + CACHE_SECONDS, price)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


@dataclass
class _Turn:
    """Redis work asked for during one event-loop turn: counts and reads (with their waiters), writes."""

    counts: list[tuple[str, asyncio.Future]] = field(default_factory=list)
    reads: list[tuple[str, asyncio.Future]] = field(default_factory=list)
    writes: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class SharedStore:
    """The cache and the rate-limit counters, in Redis when possible and in this process otherwise."""

    redis: Redis | None
    limit_per_minute: int
    local_cache: LocalCache = field(default_factory=LocalCache)
    _counters: dict[tuple[str, int], int] = field(default_factory=dict)
    _window: int = -1  # the minute _counters holds
    _down_until: float = 0.0
    _turn: _Turn | None = None
    _flushes: set[asyncio.Task] = field(default_factory=set)

    def _shared(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        if time.monotonic() >= self._down_until:
            metrics.SHARED_STORE_FALLBACKS.inc()
            log.warning("Redis unavailable (%s): cache and rate limits are per process for now", error)
        self._down_until = time.monotonic() + RETRY_SECONDS

    def _current_turn(self) -> _Turn:
        """The work of this loop turn; the first caller schedules the one pipeline that sends it."""
        if self._turn is None:
            self._turn = _Turn()
            asyncio.get_running_loop().call_soon(self._send_turn)
        return self._turn

    def _send_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            task = asyncio.get_running_loop().create_task(self._send(turn))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send(self, turn: _Turn) -> None:
        """One pipeline for a turn; on a Redis error the waiters get ``None`` and use this process's stores.

        Counts of one counter are sent as one ``INCRBY`` (each waiter gets its own running
        total, in the order they asked) and all reads as one ``MGET``.
        """
        counters: dict[str, list[asyncio.Future]] = {}
        for counter, waiter in turn.counts:
            counters.setdefault(counter, []).append(waiter)
        try:
            pipe = self.redis.pipeline(transaction=False)  # type: ignore[union-attr]
            for key, value in turn.writes:
                pipe.set(f"{NAMESPACE}:cache:{key}", value, ex=CACHE_SECONDS)
            for counter, waiters in counters.items():
                pipe.incrby(counter, len(waiters))
                pipe.expire(counter, 120)
            if turn.reads:
                pipe.mget([f"{NAMESPACE}:cache:{key}" for key, _ in turn.reads])
            results = await pipe.execute()
        except (RedisError, OSError) as error:
            self._failed(error)
            for key, value in turn.writes:
                self.local_cache.set(key, _PRICE.unpack(value)[0])
            results = None
        except BaseException:
            for _, waiter in [*turn.counts, *turn.reads]:
                waiter.cancel()
            raise
        position = len(turn.writes)
        for waiters in counters.values():
            total = None if results is None else results[position]
            position += 2
            for index, waiter in enumerate(waiters):
                if not waiter.done():
                    waiter.set_result(None if total is None else total - len(waiters) + index + 1)
        values = None if results is None or not turn.reads else results[position]
        for index, (_, waiter) in enumerate(turn.reads):
            if not waiter.done():
                waiter.set_result(None if values is None else (values[index] or b""))

    async def get_price(self, key: str) -> float | None:
        if self._shared():
            waiter = asyncio.get_running_loop().create_future()
            self._current_turn().reads.append((key, waiter))
            value = await waiter
            if value is not None:  # b"" = not in Redis; None = Redis failed, ask this process
                return _PRICE.unpack(value)[0] if value else None
        return self.local_cache.get(key)

    def set_price(self, key: str, price: float) -> None:
        """Remember a price (written with the next pipeline; a failed write goes to this process's cache)."""
        if self._shared():
            self._current_turn().writes.append((key, _PRICE.pack(price)))
        else:
            self.local_cache.set(key, price)

    async def allow(self, identity: str, *, limit: int | None = None) -> tuple[bool, int]:
        """Count one request of ``identity`` in this minute; (allowed, seconds until the window ends).

        ``limit``: requests allowed per minute (default: ``limit_per_minute``).
        """
        limit = self.limit_per_minute if limit is None else limit
        now = time.time()
        window = int(now // 60)
        retry_after = 60 - int(now % 60)
        here = self._count_here(identity, window)
        if self._shared():
            waiter = asyncio.get_running_loop().create_future()
            self._current_turn().counts.append((f"{NAMESPACE}:ratelimit:{identity}:{window}", waiter))
            count = await waiter
            if count is not None:
                return count <= limit, retry_after
        return here <= limit, retry_after

    def _count_here(self, identity: str, window: int) -> int:
        """Count one request of ``identity`` in this process's counter of minute ``window``; its count so far."""
        if window != self._window:  # a new minute: the counts of earlier ones are done with
            self._counters = {key: count for key, count in self._counters.items() if key[1] >= window}
            self._window = window
        count = self._counters.get((identity, window), 0) + 1
        self._counters[(identity, window)] = count
        return count

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
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()
