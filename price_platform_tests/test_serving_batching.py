"""The request-path machinery that works across requests: micro-batched predictions, the log buffer, the Redis pipeline."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import msgspec
import numpy as np
import psycopg2
import pytest

from serving import prediction_log
from serving.batching import MicroBatcher
from serving.cache import SharedStore, redis_client
from serving.prediction_log import QUIET_ROWS, LoggedPredictions, PredictionLog


class CountingModel:
    """A stand-in model: price = 1000 * first value; a negative first value makes the whole call fail."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, rows: list[tuple[Any, ...]]) -> np.ndarray:
        self.calls.append(len(rows))
        if any(row[0] < 0 for row in rows):
            raise ValueError("negative")
        return np.array([1000.0 * row[0] for row in rows])


async def _gather(batcher: MicroBatcher, model: Any, firsts: list[int]) -> list[Any]:
    return await asyncio.gather(*(batcher.predict(model, (value, "x")) for value in firsts), return_exceptions=True)


def test_one_record_requests_of_one_loop_turn_share_one_model_call() -> None:
    model = CountingModel()
    prices = asyncio.run(_gather(MicroBatcher(), model, [1, 2, 3, 4, 5]))
    assert prices == [1000.0, 2000.0, 3000.0, 4000.0, 5000.0]
    assert model.calls == [5]


def test_a_record_the_model_fails_on_fails_only_its_own_request() -> None:
    model = CountingModel()
    results = asyncio.run(_gather(MicroBatcher(), model, [1, -1, 3]))
    assert results[0] == 1000.0 and results[2] == 3000.0
    assert isinstance(results[1], ValueError)
    assert model.calls == [3, 1, 1, 1]  # the shared call failed, then each row alone


def test_each_model_version_gets_its_own_call() -> None:
    old, new = CountingModel(), CountingModel()
    batcher = MicroBatcher()

    async def both() -> list[Any]:
        return await asyncio.gather(batcher.predict(old, (1,)), batcher.predict(new, (2,)), batcher.predict(old, (3,)))

    assert asyncio.run(both()) == [1000.0, 2000.0, 3000.0]
    assert old.calls == [2] and new.calls == [1]


async def _request(batcher: MicroBatcher, model: CountingModel, value: int, go: asyncio.Event) -> float | None:
    """A ``/predict`` request as the route runs it: announced, then (once ``go`` is set) a row or none (value 0)."""
    with batcher.expecting():
        await go.wait()
        if value == 0:
            batcher.not_coming()  # e.g. its price came from the cache
            return None
        return await batcher.predict(model, (value,))


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def _expected_requests(model: CountingModel) -> dict[str, Any]:
    batcher = MicroBatcher(window=60.0)  # a wait of the window would stall the test: every call here comes first
    ready = asyncio.Event()
    ready.set()
    lone = asyncio.create_task(_request(batcher, model, 1, ready))
    await _turns(3)
    seen: dict[str, Any] = {"lone_done": lone.done()}
    await lone

    first_go, second_go, third_go = asyncio.Event(), asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_request(batcher, model, 2, first_go))
    second = asyncio.create_task(_request(batcher, model, 3, second_go))
    cached = asyncio.create_task(_request(batcher, model, 0, third_go))
    await _turns(2)
    first_go.set()
    await _turns(3)
    seen["first_waited_for_the_others"] = not first.done()
    second_go.set()
    await _turns(3)
    seen["still_waiting_for_the_cached_one"] = not first.done()
    third_go.set()
    seen["prices"] = await asyncio.gather(first, second, cached)
    return seen


def test_a_lone_request_waits_for_nothing_and_one_among_others_waits_until_they_queued_or_left() -> None:
    model = CountingModel()
    seen = asyncio.run(_expected_requests(model))
    assert seen == {"lone_done": True, "first_waited_for_the_others": True, "still_waiting_for_the_cached_one": True,
                    "prices": [2000.0, 3000.0, None]}
    assert model.calls == [1, 2]


async def _late_request(model: CountingModel) -> list[float]:
    batcher = MicroBatcher(window=0.01)
    never = asyncio.Event()
    slow = asyncio.create_task(_request(batcher, model, 5, never))  # expected, but it does not come
    await _turns(2)
    price = await _request(batcher, model, 4, _set(asyncio.Event()))
    slow.cancel()
    return [price]


def _set(event: asyncio.Event) -> asyncio.Event:
    event.set()
    return event


def test_a_row_waits_at_most_the_window_for_a_request_that_does_not_come() -> None:
    model = CountingModel()
    assert asyncio.run(_late_request(model)) == [4000.0]
    assert model.calls == [1]


Record = msgspec.defstruct("Record", [("area", float), ("owner", str | None), ("note", str, "")], kw_only=True)


def _batch(count: int) -> LoggedPredictions:
    records = [Record(area=float(i), owner=f"owner {i}") for i in range(count)]
    return LoggedPredictions(
        [uuid.uuid4() for _ in range(count)], datetime.now(UTC), "7", records,
        [100.0] * count, [90.0] * count, [110.0] * count, 1.5, "key",
    )


def test_the_log_buffer_counts_rows_and_keeps_what_fits() -> None:
    log = PredictionLog(None, capacity=5)
    log.add(_batch(3))
    log.add(_batch(4))  # two fit, two are dropped
    log.add(_batch(1))  # full: dropped
    assert (log.accepted, log.dropped, len(log)) == (5, 3, 5)


def _write(log: PredictionLog, *batches: LoggedPredictions) -> None:
    """Queue ``batches`` and run the writer until they are written (or fail the test after 30 s)."""
    for batch in batches:
        log.add(batch)
    log.start()
    log.stop(timeout=30.0)


def _logged(dsn: str, ids: list[uuid.UUID]) -> dict[str, tuple]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select prediction_id::text, features::text, prediction, lower_bound, upper_bound, model_version, latency_ms,"
            " key_id from monitoring.predictions where prediction_id = any(%s::uuid[])",
            ([str(i) for i in ids],),
        )
        return {row[0]: row[1:] for row in cursor.fetchall()}


def test_the_writer_copies_rows_to_postgresql_with_pii_hashed(postgres) -> None:
    log = PredictionLog(postgres.dsn(), capacity=10, pii=["owner"])
    batch = _batch(2)
    tricky = Record(area=2.5, owner=None, note='tab\there, newline\n, quote " and back\\slash')
    odd = LoggedPredictions([uuid.uuid4()], datetime.now(UTC), "8\t9", [tricky], [1.25], [1.0], [1.5], 0.5, None)
    _write(log, batch, odd)
    rows = _logged(postgres.dsn(), [*batch.prediction_ids, *odd.prediction_ids])
    assert (log.written, log.dropped) == (3, 0)
    first, second = (rows[str(i)] for i in batch.prediction_ids)
    features = [msgspec.json.decode(row[0]) for row in (first, second)]
    assert [f["area"] for f in features] == [0.0, 1.0]
    assert all(len(f["owner"]) == 64 and "owner" not in f["owner"] for f in features)
    assert second[1:] == (100.0, 90.0, 110.0, "7", 1.5, "key")
    stored = rows[str(odd.prediction_ids[0])]
    assert msgspec.json.decode(stored[0]) == {"area": 2.5, "owner": None, "note": tricky.note}
    assert stored[1:] == (1.25, 1.0, 1.5, "8\t9", 0.5, None)


def test_rows_postgresql_already_holds_are_skipped_not_dropped(postgres) -> None:
    """A retry after a commit whose answer was lost sends rows again: COPY refuses them, the insert skips them."""
    batch, fresh = _batch(3), _batch(2)
    _write(PredictionLog(postgres.dsn(), capacity=10), batch)
    again = PredictionLog(postgres.dsn(), capacity=10)
    _write(again, batch, fresh)
    assert (again.written, again.dropped) == (5, 0)
    assert len(_logged(postgres.dsn(), [*batch.prediction_ids, *fresh.prediction_ids])) == 5


def _written(log: PredictionLog, rows: int, seconds: float = 30.0) -> bool:
    """Whether the writer has written ``rows`` rows within ``seconds`` (a generous deadline, not a speed check)."""
    deadline = time.monotonic() + seconds
    while log.written < rows and time.monotonic() < deadline:
        time.sleep(0.02)
    return log.written >= rows


def test_the_writer_holds_its_write_while_a_request_is_in_flight(postgres) -> None:
    log = PredictionLog(postgres.dsn(), capacity=10, quiet_seconds=600.0)
    log.start()
    try:
        with log.handling():
            log.add(_batch(3))
            assert not _written(log, 3, seconds=1.0)  # the writer wakes every FLUSH_SECONDS, but waits
        assert _written(log, 3)  # the request is answered: now it writes
    finally:
        log.stop(timeout=30.0)
    assert (log.written, log.dropped) == (3, 0)


def test_the_last_request_out_wakes_the_writer_when_enough_rows_wait(postgres, monkeypatch) -> None:
    monkeypatch.setattr(prediction_log, "FLUSH_SECONDS", 600.0)  # no timed rounds: only wakes write
    log = PredictionLog(postgres.dsn(), capacity=2 * QUIET_ROWS)
    log.start()
    try:
        with log.handling():
            log.add(_batch(QUIET_ROWS - 1))
        assert not _written(log, 1, seconds=1.0)  # too few rows for a write of their own
        with log.handling():
            log.add(_batch(1))
        assert _written(log, QUIET_ROWS)
    finally:
        log.stop(timeout=30.0)
    assert (log.written, log.dropped) == (QUIET_ROWS, 0)


def test_under_steady_load_the_writer_waits_only_so_long_for_a_quiet_moment(postgres) -> None:
    log = PredictionLog(postgres.dsn(), capacity=10, quiet_seconds=0.05)
    log.start()
    try:
        with log.handling():  # a request always in flight
            log.add(_batch(4))
            assert _written(log, 4)
    finally:
        log.stop(timeout=30.0)
    assert (log.written, log.dropped) == (4, 0)


async def _shared_figures(url: str, identity: str, key: str) -> SimpleNamespace:
    """Two stores (two processes' worth) on one Redis: one rate limit, one cache."""
    first, second = SharedStore(redis_client(url), 2), SharedStore(redis_client(url), 2)
    try:
        allowed = [(await store.allow(identity))[0] for store in (first, second, first)]
        first.set_price(key, 123.5)
        cached = await first.get_price(key)  # sent in the same pipeline, after the write
        seen_by_other = await second.get_price(key)
        return SimpleNamespace(allowed=allowed, cached=cached, seen_by_other=seen_by_other)
    finally:
        await first.close()
        await second.close()


def test_two_stores_on_one_redis_share_the_limit_and_the_cache(redis_url: str) -> None:
    token = uuid.uuid4().hex
    figures = asyncio.run(_shared_figures(redis_url, f"test-{token}", f"test-model:1:{token}"))
    assert figures.allowed == [True, True, False]
    assert figures.cached == figures.seen_by_other == 123.5


async def _without_redis(url: str) -> SimpleNamespace:
    store = SharedStore(redis_client(url), 1)
    try:
        allowed = [(await store.allow("someone"))[0] for _ in range(2)]
        store.set_price("model:1:abc", 42.0)
        return SimpleNamespace(allowed=allowed, cached=await store.get_price("model:1:abc"), shared=store._shared())
    finally:
        await store.close()


def test_without_redis_the_limit_and_the_cache_live_in_the_process() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    figures = asyncio.run(_without_redis(f"redis://127.0.0.1:{port}/0"))
    assert figures.allowed == [True, False]
    assert figures.cached == 42.0
    assert not figures.shared  # tried again after RETRY_SECONDS


@pytest.mark.parametrize("count", [1, 8, 9, 1000])
def test_prediction_ids_are_distinct_version_4_uuids(count: int) -> None:
    from serving.pricing import new_ids

    ids = new_ids(count)
    assert len(ids) == len(set(ids)) == count
    assert all(isinstance(i, uuid.UUID) and i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)


async def _one_turn(url: str, identity: str) -> list[bool]:
    store = SharedStore(redis_client(url), 2)
    try:
        results = await asyncio.gather(*(store.allow(identity) for _ in range(3)))  # one pipeline, one INCRBY
        return [allowed for allowed, _ in results]
    finally:
        await store.close()


def test_requests_of_one_loop_turn_are_counted_one_by_one(redis_url: str) -> None:
    assert asyncio.run(_one_turn(redis_url, f"test-{uuid.uuid4().hex}")) == [True, True, False]
