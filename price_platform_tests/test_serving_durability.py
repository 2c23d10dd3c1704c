"""Durability of the prediction log: rows answered while PostgreSQL is away survive a SIGTERM and a restart.

The unit tests drive :class:`PredictionLog` against a PostgreSQL that refuses connections (a
free port) and then the session's real one; the end-to-end test runs ``price-platform serve``
on a PostgreSQL it starts and stops itself, SIGTERMs the server during the outage and restarts
both: every prediction a client was answered with is in the table, once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import psycopg2
import pytest
from conftest import free_port
from sqlalchemy.engine import make_url
from test_serving_support import Champion, Server, champion, records, server_env  # noqa: F401 (fixture)

from price_platform.postgres import EmbeddedPostgres, PostgresServer
from price_platform.registry.integrity import record_digests, recorded_digests
from price_platform.warehouse import migrate
from serving.prediction_log import LoggedPredictions, PredictionLog
from serving.prediction_spill import CORRUPT_SUFFIX, SUFFIX, frame

Record = msgspec.defstruct("Record", [("area", float), ("owner", str | None)], kw_only=True)


def _batch(count: int) -> LoggedPredictions:
    records_ = [Record(area=float(i), owner=f"owner {i}") for i in range(count)]
    return LoggedPredictions(
        [uuid.uuid4() for _ in range(count)], datetime.now(UTC), "7", records_,
        [100.0] * count, [90.0] * count, [110.0] * count, 1.5, "key",
    )


def _unreachable_dsn() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"


def _until(condition, seconds: float = 60.0) -> bool:
    """Whether ``condition()`` holds within ``seconds`` (a generous deadline, not a speed check)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def _counts(dsn: str, ids: list[uuid.UUID]) -> dict[str, int]:
    """How many rows the prediction log holds per id (ids it lacks are absent)."""
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select prediction_id::text, count(*) from monitoring.predictions where prediction_id = any(%s::uuid[])"
            " group by 1", ([str(i) for i in ids],),
        )
        return dict(cursor.fetchall())


def _spill_away(spill: Path, *batches: LoggedPredictions) -> PredictionLog:
    """A log whose PostgreSQL refuses connections, given ``batches``, stopped: its rows are in spill files."""
    log = PredictionLog(_unreachable_dsn(), capacity=1000, spill_dir=spill)
    log.start()
    for batch in batches:
        log.add(batch)
        assert _until(lambda: not len(log))  # one spill record per batch
    log.stop(timeout=30.0)
    return log


def test_rows_spilled_during_an_outage_are_replayed_once_and_the_file_deleted(postgres, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    first, second = _batch(3), _batch(2)
    away = PredictionLog(_unreachable_dsn(), capacity=1000, spill_dir=spill)
    away.start()
    away.add(first)
    assert _until(lambda: away.spilled == 3)
    away.add(second)  # still in memory or spilled when SIGTERM comes: spilled at once either way
    started = time.monotonic()
    away.stop(timeout=30.0)
    assert time.monotonic() - started < 20.0, "stop waited for PostgreSQL instead of spilling"
    assert (away.spilled, away.dropped, away.written) == (5, 0, 0)
    assert len(list(spill.glob(f"*{SUFFIX}"))) == 1

    ids = [*first.prediction_ids, *second.prediction_ids]
    back = PredictionLog(postgres.dsn(), capacity=1000, spill_dir=spill)
    back.start()
    try:
        assert _until(lambda: back.replayed == 5)
    finally:
        back.stop(timeout=30.0)
    assert _counts(postgres.dsn(), ids) == {str(i): 1 for i in ids}
    assert not list(spill.iterdir()), "the replayed file was not deleted"

    # A replay cut short after its commit (the file still there) writes nothing twice.
    _spill_away(spill, first)
    again = PredictionLog(postgres.dsn(), capacity=1000, spill_dir=spill)
    again.start()
    try:
        assert _until(lambda: not list(spill.iterdir()))
    finally:
        again.stop(timeout=30.0)
    assert again.replayed == 0 and _counts(postgres.dsn(), ids) == {str(i): 1 for i in ids}


def test_a_torn_or_damaged_spill_record_is_reported_and_the_intact_ones_are_written(
    postgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill = tmp_path / "spill"
    good, damaged, last = _batch(2), _batch(1), _batch(2)
    _spill_away(spill, good, damaged, last)
    [path] = spill.glob(f"*{SUFFIX}")
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    broken = bytearray(lines[1])
    broken[-5] ^= 0x01  # one bit of the middle record's payload flipped
    torn = frame(b'{"predictions": [], "actuals": []}')[:-7]  # a crash in mid-write of a fourth record
    path.write_bytes(lines[0] + bytes(broken) + lines[2] + torn)

    back = PredictionLog(postgres.dsn(), capacity=1000, spill_dir=spill)
    with caplog.at_level(logging.INFO, logger="serving.prediction_spill"):
        back.start()
        try:
            assert _until(lambda: back.replayed == 4)
        finally:
            back.stop(timeout=30.0)
    ids = [*good.prediction_ids, *damaged.prediction_ids, *last.prediction_ids]
    assert _counts(postgres.dsn(), ids) == {str(i): 1 for i in [*good.prediction_ids, *last.prediction_ids]}
    kept = path.with_name(path.name + CORRUPT_SUFFIX)
    assert kept.read_bytes() == lines[0] + bytes(broken) + lines[2] + torn, "the damaged file was not kept as it was"
    assert not list(spill.glob(f"*{SUFFIX}"))
    message = next(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert str(path) in message and "2 unreadable records" in message
    assert "checksum mismatch" in message and "torn record" in message and str(kept) in message
    assert "2 intact records are written" in message


# --- end to end: a served API, PostgreSQL down, SIGTERM, both back ---------------------------------------


def _answered_ids(url: str, bodies: list[dict], *, clients: int, seconds: float) -> list[str]:
    """Prediction ids the API answered to ``clients`` loops posting ``bodies`` for ``seconds`` (or until it stops)."""

    async def main() -> list[str]:
        ids: list[str] = []
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:

            async def client(number: int) -> None:
                index = number
                while time.monotonic() < deadline:
                    try:
                        response = await http.post("/predict", json=bodies[index % len(bodies)])
                    except httpx.TransportError:  # the server is gone
                        return
                    if response.status_code != 200:  # draining: /ready says 503, requests are still answered
                        return
                    ids.extend(p["prediction_id"] for p in response.json()["predictions"])
                    index += clients

            await asyncio.gather(*(client(i) for i in range(clients)))
        return ids

    return asyncio.run(main())


def test_predictions_answered_during_an_outage_survive_sigterm_and_reach_the_table_once(
    champion: Champion, tmp_path: Path
) -> None:
    bodies = records(champion.spec, champion.holdout.head(100))
    database = EmbeddedPostgres(tmp_path / "pg", free_port())
    database.start()
    try:
        platform = PostgresServer(server_url=make_url(database.url), database_name="serving_durability")
        platform.ensure_databases()
        migrate(platform.dsn())
        name = champion.settings.model_name  # the server verifies the champion against this database's digests
        record_digests(platform.dsn(), name, champion.version, recorded_digests(champion.dsn, name, champion.version))
        spill = tmp_path / "spill"
        env = server_env(champion.settings, database_url=database.url, database_name="serving_durability",
                         log_spill_dir=spill, drain_seconds=1.0)
        server = Server(env, log_path=tmp_path / "first.log")
        try:
            server.wait_ready()
            before = _answered_ids(server.url, bodies, clients=4, seconds=3.0)
            database.stop()
            during = _answered_ids(server.url, bodies, clients=4, seconds=5.0)
            timer = threading.Timer(2.0, server.process.send_signal, (signal.SIGTERM,))
            timer.start()  # SIGTERM under load, PostgreSQL still away
            during += _answered_ids(server.url, bodies, clients=4, seconds=30.0)
            assert server.process.wait(60) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
        finally:
            server.stop()
        first_log = (tmp_path / "first.log").read_text()
        assert "unwritten" not in first_log and "dropped" not in first_log, first_log[-3000:]
        assert "go to the spill file" in first_log
        assert list(spill.glob(f"*{SUFFIX}")), "nothing was spilled"
        assert len(during) > 100

        database.start()
        again = Server(env, log_path=tmp_path / "second.log")
        try:
            again.wait_ready()
            answered = before + during
            assert len(set(answered)) == len(answered)
            assert _until(lambda: len(_counts(platform.dsn(), answered)) == len(answered), 120.0)
            counts = _counts(platform.dsn(), answered)
        finally:
            again.stop()
        assert set(counts) == set(answered) and set(counts.values()) == {1}
        assert not list(spill.iterdir()), "replayed spill files were not deleted"
        assert "replayed" in (tmp_path / "second.log").read_text()
    finally:
        database.stop()
