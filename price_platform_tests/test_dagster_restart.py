"""The Dagster UI over the project's instance config survives a restart of its PostgreSQL without a 5xx.

The webserver runs with the options ``price-platform up`` gives it (``WEBSERVER_DB_OPTIONS``);
without them the first page after the restart answers 500 (a pooled connection is dead).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from price_platform.launcher import WEBSERVER_DB_OPTIONS
from price_platform.postgres import EmbeddedPostgres, PostgresServer
from price_platform_tests.conftest import free_port, wait_for_port

PROJECT_DIR = Path(__file__).resolve().parent.parent
#: A code location of one asset: the test is about the instance's storage, not the platform's definitions.
TINY_DEFINITIONS = '''
import dagster as dg

@dg.asset
def one() -> int:
    return 1

defs = dg.Definitions(assets=[one])
'''
PAGES = ("/server_info", "/runs", "/assets", "/overview/activity")
RUNS_QUERY = {"query": "{ runsOrError { __typename ... on Runs { results { runId } } } }"}


@pytest.fixture
def webserver() -> Iterator[tuple[str, EmbeddedPostgres]]:
    """``dagster-webserver`` with the project's dagster.yaml, its storage on an embedded server of its own."""
    folder = Path(tempfile.mkdtemp(prefix="pp-dagster-restart-"))
    folder.chmod(0o755)
    server = EmbeddedPostgres(folder / "postgres", free_port())
    process = None
    try:
        server.start()
        from sqlalchemy.engine import make_url

        platform = PostgresServer(server_url=make_url(server.url), database_name="pp_restart")
        platform.ensure_databases()
        home = folder / "dagster"
        home.mkdir()
        shutil.copyfile(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
        (folder / "tiny.py").write_text(TINY_DEFINITIONS)
        port = free_port()
        env = {**os.environ, "DAGSTER_HOME": str(home), "PRICE_PLATFORM_DAGSTER_STORAGE_URL": platform.url("dagster")}
        log = (folder / "webserver.log").open("w")
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "-f", str(folder / "tiny.py"),
             "-h", "127.0.0.1", "-p", str(port), *WEBSERVER_DB_OPTIONS],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        wait_for_port(port, timeout=180, process=process)
        yield f"http://127.0.0.1:{port}", server
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def answers(url: str) -> list[int]:
    codes = [httpx.get(f"{url}{page}", timeout=60).status_code for page in PAGES]
    graphql = httpx.post(f"{url}/graphql", json=RUNS_QUERY, timeout=60)
    codes.append(graphql.status_code if graphql.json()["data"]["runsOrError"]["__typename"] == "Runs" else 599)
    return codes


def test_the_ui_answers_every_page_after_postgres_restarts(webserver) -> None:
    url, server = webserver
    assert set(answers(url)) == {200}
    server.stop()
    server.start()
    after = [answers(url) for _ in range(3)]  # the first requests after the restart are where stale connections fail
    assert all(set(codes) == {200} for codes in after), after
