"""A new champion is announced on Redis, where the API servers listen; a Redis that is away is not an error."""

from __future__ import annotations

import time

import redis

from price_platform.registry.announce import announce_champion, promotion_channel
from price_platform_tests.conftest import free_port


def test_a_subscribed_server_hears_the_new_champion(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    listener = client.pubsub()
    listener.subscribe(promotion_channel("announce-test"))
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    assert announce_champion(redis_url, "announce-test", "7") == 1
    deadline = time.monotonic() + 10
    message = None
    while message is None and time.monotonic() < deadline:
        message = listener.get_message(ignore_subscribe_messages=True, timeout=1)
    assert message is not None and message["data"] == b"7"
    listener.close()


def test_without_redis_nothing_is_announced_and_nothing_raises() -> None:
    assert announce_champion(None, "announce-test", "7") == 0
    assert announce_champion(f"redis://127.0.0.1:{free_port()}/0", "announce-test", "7") == 0
