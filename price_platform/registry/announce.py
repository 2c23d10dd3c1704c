"""Telling the API servers at once that the champion moved (Redis pub/sub), instead of at their next poll."""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)


def promotion_channel(model_name: str) -> str:
    """Redis pub/sub channel on which a new champion of ``model_name`` is announced (message: the version)."""
    return f"price-platform:champion:{model_name}"


def announce_champion(redis_url: str | None, model_name: str, version: str) -> int:
    """Publish the new champion version; return how many servers heard it.

    Best effort by design: servers also poll the alias, so a Redis that is away delays the
    switch by one poll interval and is logged, never raised.
    """
    if not redis_url:
        return 0
    try:
        with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
            return int(client.publish(promotion_channel(model_name), version))
    except redis.RedisError as error:
        log.warning("could not announce champion %s v%s on Redis (servers will see it when they poll): %s",
                    model_name, version, error)
        return 0
