"""Reliability of the served API under load: promotions, Redis and PostgreSQL outages, SIGTERM, shared limits.

Each test runs ``price-platform serve`` as a child process on loopback and drives it with
concurrent clients; outages are made only on servers the test started itself.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import psycopg2
import pytest
import redis
from conftest import free_port, wait_for_port, which
from sqlalchemy.engine import make_url
from test_serving_support import (  # noqa: F401 (fixture)
    Champion,
    Server,
    add_versions,
    champion,
    records,
    run_load,
    server_env,
)

from price_platform.postgres import EmbeddedPostgres, PostgresServer
from price_platform.registry.integrity import record_digests, recorded_digests
from price_platform.warehouse import migrate
from serving.model_store import promotion_channel


@pytest.fixture(scope="module")
def bodies(champion: Champion) -> list[dict]:
    return records(champion.spec, champion.holdout)


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_ten_promotions_under_load_fail_no_request_and_never_go_back(
    champion: Champion, bodies: list[dict], redis_url: str, tmp_path: Path
) -> None:
    settings = champion.settings.model_copy(update={"model_name": f"promoted-{uuid.uuid4().hex[:6]}"})
    promoted = Champion(settings, champion.spec, champion.pipeline, champion.train, champion.holdout,
                        champion.tracking_uri, champion.dsn)
    promoted.promote(promoted.register())
    versions = add_versions(promoted, 10)
    server = Server(server_env(settings, redis_url=redis_url, model_poll_seconds=5.0), log_path=tmp_path / "server.log")
    publisher = redis.Redis.from_url(redis_url)
    try:
        assert server.wait_ready()["model_version"] == "1"

        def promote_all(start: float) -> None:
            for index, version in enumerate(versions):
                time.sleep(max(0.0, start + 4.0 + index * 5.0 - time.monotonic()))
                promoted.promote(version)
                publisher.publish(promotion_channel(settings.model_name), version)

        outcomes = run_load(server.url, bodies, clients=32, seconds=60.0, on_tick=promote_all)
    finally:
        server.stop()
    failed = [o for o in outcomes if o.status != 200]
    assert not failed, failed[:5]
    assert all(len(o.versions) == 1 for o in outcomes)
    for client in range(32):
        seen = [int(o.versions[0]) for o in sorted((o for o in outcomes if o.client == client), key=lambda o: o.started)]
        assert seen == sorted(seen), f"client {client} saw versions go backwards: {seen}"
    served = {o.versions[0] for o in outcomes}
    assert versions[-1] in served and len(served) >= 6, served
    assert "refused" not in (tmp_path / "server.log").read_text()


def send_on_idle_connection(url: str, idle_seconds: float) -> int | None:
    """Status of a second request on one kept-alive connection ``idle_seconds`` after the first (None: closed)."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/health")
        first = connection.getresponse()
        first.read()  # the whole answer, however many segments it came in
        assert first.status == 200 and not first.will_close  # so the next request goes on this connection
        time.sleep(idle_seconds)
        try:
            connection.request("GET", "/health")
            second = connection.getresponse()
            second.read()
            return second.status
        except ConnectionError:  # http.client.RemoteDisconnected included
            return None
    finally:
        connection.close()


@pytest.mark.parametrize(("keep_alive", "idle", "answered"), [(None, 6.0, True), (1, 2.5, False)])
def test_kept_alive_connections_outlive_the_clients_idle_timeout(
    champion: Champion, keep_alive: int | None, idle: float, answered: bool, tmp_path: Path
) -> None:
    """By default a connection idle for longer than httpx's 5 s pool expiry still answers (no close race)."""
    overrides = {} if keep_alive is None else {"keep_alive_seconds": keep_alive}
    server = Server(server_env(champion.settings, **overrides), log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        second = send_on_idle_connection(server.url, idle)
    finally:
        server.stop()
    assert (second == 200) is answered, second


@pytest.fixture()
def own_redis(tmp_path: Path):
    binary = which("redis-server")
    port = free_port()

    def start() -> subprocess.Popen:
        process = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no",
                                    "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for_port(port, process=process)
        return process

    state = {"process": start()}
    yield port, state, start
    state["process"].terminate()
    state["process"].wait(10)


def test_redis_down_for_30_seconds_under_load_gives_no_5xx(champion: Champion, bodies: list[dict], own_redis, tmp_path: Path) -> None:
    port, state, start = own_redis
    url = f"redis://127.0.0.1:{port}/0"
    server = Server(server_env(champion.settings, redis_url=url), log_path=tmp_path / "server.log")
    try:
        server.wait_ready()

        def outage(begin: float) -> None:
            time.sleep(max(0.0, begin + 5.0 - time.monotonic()))
            state["process"].terminate()
            state["process"].wait(10)
            time.sleep(30.0)
            state["process"] = start()

        outcomes = run_load(server.url, bodies[:50], clients=16, seconds=45.0, on_tick=outage)
        keys_after = redis.Redis(port=port).keys("price-platform:*")
    finally:
        server.stop()
    assert outcomes and all(o.status == 200 for o in outcomes), [o for o in outcomes if o.status != 200][:5]
    during = [o for o in outcomes if 10 < o.started - outcomes[0].started < 30]
    assert len(during) > 100
    assert keys_after, "the cache and rate limits did not come back to Redis after it returned"
    assert "Redis unavailable" in (tmp_path / "server.log").read_text()


def test_postgres_away_for_60_seconds_loses_no_prediction_and_logs_catch_up(
    champion: Champion, bodies: list[dict], tmp_path: Path
) -> None:
    database = EmbeddedPostgres(tmp_path / "pg", free_port())
    database.start()
    try:
        server_url = make_url(database.url)
        platform = PostgresServer(server_url=server_url, database_name="serving_outage")
        platform.ensure_databases()
        migrate(platform.dsn())
        name = champion.settings.model_name  # the server verifies the champion against this database's digests
        record_digests(platform.dsn(), name, champion.version, recorded_digests(champion.dsn, name, champion.version))
        # The buffer holds the whole outage: this load predicts up to ~2,000 rows/s for 60 s.
        env = server_env(
            champion.settings, database_url=database.url, database_name="serving_outage", log_buffer_size=1_000_000
        )
        server = Server(env, log_path=tmp_path / "server.log")
        try:
            server.wait_ready()

            def outage(begin: float) -> None:
                time.sleep(max(0.0, begin + 5.0 - time.monotonic()))
                database.stop()
                down_since = time.monotonic()
                while port_open(database.port):
                    time.sleep(0.2)
                time.sleep(max(0.0, down_since + 60.0 - time.monotonic()))
                for attempt in range(3):  # a loaded machine can be slow to bring PostgreSQL back
                    try:
                        database.start()
                        break
                    except subprocess.CalledProcessError:
                        if attempt == 2:
                            raise
                        time.sleep(2.0)

            outcomes = run_load(server.url, bodies[:200], clients=8, seconds=75.0, on_tick=outage)
            answered = len(outcomes)
            assert answered > 1000 and all(o.status == 200 for o in outcomes), [o for o in outcomes if o.status != 200][:5]
            predicted = sum(o.rows for o in outcomes)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with psycopg2.connect(platform.dsn()) as connection, connection.cursor() as cursor:
                    cursor.execute("select count(*) from monitoring.predictions")
                    written = cursor.fetchone()[0]
                if written >= predicted:
                    break
                time.sleep(1.0)
            assert written >= 0.999 * predicted, (written, predicted)
        finally:
            server.stop()
    finally:
        database.stop()


def test_sigterm_under_load_finishes_every_request_in_flight(champion: Champion, bodies: list[dict], tmp_path: Path) -> None:
    batches = [bodies[i : i + 100] for i in range(0, 600, 100)]
    server = Server(server_env(champion.settings, drain_seconds=1.5), log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        sent_at: dict[str, float] = {}

        def terminate(begin: float) -> None:
            time.sleep(max(0.0, begin + 5.0 - time.monotonic()))
            sent_at["sigterm"] = time.monotonic()
            server.process.send_signal(signal.SIGTERM)

        outcomes = run_load(server.url, batches, clients=16, seconds=30.0, stop_when_not_ready=True, on_tick=terminate)
        exit_code = server.process.wait(60)
    finally:
        server.stop()
    lost = [o for o in outcomes if o.status != 200]
    assert not lost, lost[:5]
    # uvicorn re-raises the signal once its graceful shutdown is done
    assert exit_code in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "server.log").read_text()
    in_flight = [o for o in outcomes if o.started < sent_at["sigterm"] < o.finished]
    assert in_flight, "no request was in flight when SIGTERM arrived"


def test_two_server_processes_share_one_rate_limit_through_redis(champion: Champion, redis_url: str, tmp_path: Path) -> None:
    from serving.auth import create_key

    _, key = create_key(champion.dsn, "predict", "shared limit test")
    env = server_env(champion.settings, redis_url=redis_url, auth_enabled=True, rate_limit_per_minute=30)
    first = Server(env, log_path=tmp_path / "first.log")
    second = Server(env, log_path=tmp_path / "second.log")
    record = records(champion.spec, champion.holdout.head(1))[0]
    try:
        first.wait_ready()
        second.wait_ready()
        if time.time() % 60 > 45:  # the limit counts per calendar minute: start inside one
            time.sleep(61 - time.time() % 60)
        statuses = []
        for index in range(40):
            target = first if index % 2 == 0 else second
            statuses.append(httpx.post(f"{target.url}/predict", json=record, headers={"X-API-Key": key}, timeout=30).status_code)
    finally:
        first.stop()
        second.stop()
    assert statuses.count(200) == 30 and statuses.count(429) == 10, statuses
    assert statuses[:30] == [200] * 30


def test_a_crashed_worker_is_replaced_and_the_server_keeps_answering(champion: Champion, tmp_path: Path) -> None:
    import os

    import psutil

    server = Server(server_env(champion.settings), workers=2, log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        parent = psutil.Process(server.process.pid)

        def workers() -> list[psutil.Process]:
            found = []
            for child in parent.children():
                try:
                    if child.status() != psutil.STATUS_ZOMBIE and "spawn" in " ".join(child.cmdline()):
                        found.append(child)
                except psutil.Error:  # gone (or reaped) meanwhile
                    pass
            return found

        deadline = time.monotonic() + 120
        while len(workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        first = workers()
        assert len(first) == 2, first
        os.kill(first[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = workers()
            if len(now) == 2 and first[0].pid not in {w.pid for w in now}:
                break
            time.sleep(0.2)
        assert first[0].pid not in {w.pid for w in workers()} and len(workers()) == 2
        server.wait_ready()
        assert server.process.poll() is None
    finally:
        exit_code = server.stop()
    assert re.search(r"worker-\d exited with -9; starting another", (tmp_path / "server.log").read_text())
    # the parent exits with its workers' code: -SIGTERM, which sys.exit() reports as 256 - SIGTERM
    assert exit_code in (0, -signal.SIGTERM, 128 + signal.SIGTERM, 256 - signal.SIGTERM)
