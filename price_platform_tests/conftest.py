"""Shared fixtures: real PostgreSQL, Redis and MLflow servers for the tests.

The machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are used when they
answer. Under ``CI=true`` a missing service fails the test that needs it; elsewhere it
skips. Each test session works in its own throwaway databases, dropped at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from price_platform.postgres import PostgresServer
from price_platform.settings import Settings
from price_platform.testing import SYSTEM_POSTGRES, drop_databases, free_port
from serving import mlflow_client

os.environ.setdefault("OMP_NUM_THREADS", "1")
mlflow_client.configure()  # the apps the tests build talk to MLflow as a serving process's do

SYSTEM_REDIS = os.environ.get("PRICE_PLATFORM_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_service(name: str, error: Exception) -> None:
    """Fail under CI, skip elsewhere, when a service a test needs does not answer."""
    message = f"{name} is not reachable: {error}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def wait_for_port(port: int, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


@pytest.fixture(scope="session")
def system_postgres_url() -> str:
    """URL of the machine's PostgreSQL server (fails under CI when it is down)."""
    try:
        psycopg2.connect(make_url(SYSTEM_POSTGRES).set(drivername="postgresql").render_as_string(False)).close()
    except psycopg2.OperationalError as error:
        require_service("PostgreSQL at 127.0.0.1:5432", error)
    return SYSTEM_POSTGRES


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def settings(system_postgres_url: str, session_home: Path) -> Iterator[Settings]:
    """Settings pointing at throwaway databases on the system PostgreSQL, dropped afterwards."""
    name = f"pp_test_{uuid.uuid4().hex[:8]}"
    value = Settings(
        home=session_home,
        database_url=system_postgres_url,
        database_name=name,
        mlflow_tracking_uri=None,
    )
    server = PostgresServer(server_url=make_url(system_postgres_url), database_name=name)
    server.ensure_databases()
    yield value
    drop_databases(server)


@pytest.fixture(scope="session")
def postgres(settings: Settings) -> PostgresServer:
    """The session's platform databases, migrated."""
    from price_platform.warehouse import migrate

    server = PostgresServer(server_url=make_url(settings.database_url), database_name=settings.database_name)
    migrate(server.dsn())
    return server


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the machine's Redis (fails under CI when it is down)."""
    import redis

    try:
        redis.Redis.from_url(SYSTEM_REDIS).ping()
    except redis.RedisError as error:
        require_service("Redis at 127.0.0.1:6379", error)
    return SYSTEM_REDIS


@pytest.fixture(scope="session")
def mlflow_server(postgres: PostgresServer, session_home: Path) -> Iterator[str]:
    """A real MLflow tracking server on loopback, backed by the session's PostgreSQL database."""
    port = free_port()
    artifacts = session_home / "mlartifacts"
    artifacts.mkdir(exist_ok=True)
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    log_file = (session_home / "mlflow-server.log").open("w")
    process = subprocess.Popen(
        [
            str(bin_dir / "mlflow"), "server",
            "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", postgres.url("mlflow"),
            "--artifacts-destination", str(artifacts),
            "--workers", "1",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        # A hang guard, not a speed bound: MLflow migrates its tables before it listens, which
        # took over 2 minutes on a 2-core machine running other suites.
        wait_for_port(port, timeout=600, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log_file.close()


def which(name: str) -> str:
    """Path of a command-line tool the tests need (fails under CI when it is missing)."""
    path = shutil.which(name)
    if path is None:
        require_service(name, FileNotFoundError(name))
    return path  # type: ignore[return-value]
