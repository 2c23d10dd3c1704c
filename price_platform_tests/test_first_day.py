"""A new user's first day: ``price-platform up`` as the README runs it, from start to first prediction.

One stack for the module, started as a user starts it (the ``price-platform up`` command, its
own home and ports), read through what it prints: the key it printed must work, the README's
console session must answer as the README shows, Prometheus must scrape both targets with the
rules loaded, the seed's schedules must be running, and the console must stay quiet.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from price_platform.postgres import EmbeddedPostgres
from price_platform_tests.conftest import free_port, which

PROJECT_DIR = Path(__file__).resolve().parent.parent
README = PROJECT_DIR / "README.md"
#: How long the stack may take to print its first champion before the fixture gives up (a hang guard).
FIRST_CHAMPION_TIMEOUT = 1500

# A hang guard above the fixture's own wait for the first champion (pytest's default is 900 s).
pytestmark = pytest.mark.timeout(FIRST_CHAMPION_TIMEOUT + 600)


@dataclass
class UpProcess:
    """A running ``price-platform up`` and every line it printed so far."""

    process: subprocess.Popen
    ports: dict[str, int]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:  # at least one look, also with timeout 0
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.process.poll() is not None or time.monotonic() >= deadline:
                break
            time.sleep(1)
        raise AssertionError(f"`price-platform up` printed no line matching {pattern!r}:\n" + "\n".join(self.lines))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['API_PORT']}"


@pytest.fixture(scope="module")
def up() -> Iterator[UpProcess]:
    which("prometheus")
    home = Path(tempfile.mkdtemp(prefix="pp-first-day-"))
    home.chmod(0o755)
    ports = {name: free_port() for name in
             ("EMBEDDED_PORT", "DAGSTER_PORT", "MLFLOW_PORT", "API_PORT", "EXPORTER_PORT", "PROMETHEUS_PORT")}
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith("PRICE_PLATFORM_")
    }
    env.update({f"PRICE_PLATFORM_{name}": str(port) for name, port in ports.items()})
    env.update({
        "PRICE_PLATFORM_HOME": str(home / "home"),
        "PRICE_PLATFORM_N_TRIALS": "4",  # the test needs a champion, not the best one
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "price-platform"), "up"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=PROJECT_DIR,
    )
    running = UpProcess(process=process, ports=ports)
    threading.Thread(target=running.read, daemon=True).start()
    try:
        running.wait_for(r"^first champion: version \d+", FIRST_CHAMPION_TIMEOUT)
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
        EmbeddedPostgres(home / "home" / "postgres", ports["EMBEDDED_PORT"]).stop()
        shutil.rmtree(home, ignore_errors=True)


def printed_key(up: UpProcess) -> str:
    return up.wait_for(r"API key\s+(ppk_\S+)", 0).group(1)


def test_the_printed_key_is_the_key_and_prices_a_house(up: UpProcess) -> None:
    key = printed_key(up)
    house = json.loads((PROJECT_DIR / "docs" / "examples" / "house.json").read_text())
    answer = httpx.post(f"{up.api}/predict", json=house, headers={"X-API-Key": key}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["price"] > 0
    wrong = httpx.post(f"{up.api}/predict", json=house, headers={"X-API-Key": key[:-2] + "xx"}, timeout=30)
    assert wrong.status_code == 401


def readme_session() -> list[tuple[str, str]]:
    """The README's console session: each ``$ command`` with the answer printed under it."""
    block = README.read_text().split("```console\n", 1)[1].split("```", 1)[0]
    session: list[tuple[str, str]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            session.append((line[2:], ""))
        elif session:
            command, shown = session[-1]
            session[-1] = (command, shown + line.strip())
    return session


def keys_of(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in keys_of(item)}
    if isinstance(value, list):
        return {key for item in value for key in keys_of(item)}
    return set()


def test_the_readme_console_session_answers_as_shown(up: UpProcess) -> None:
    session = readme_session()
    assert [command for command, _ in session if "curl" in command], "the README shows no curl session"
    env = {**os.environ, "KEY": printed_key(up)}
    for command, shown in session:
        if command.startswith("KEY="):
            continue  # the README's line that sets the key the user copied
        literal = command.replace("localhost:8000", f"127.0.0.1:{up.ports['API_PORT']}")
        result = subprocess.run(["bash", "-c", literal], capture_output=True, text=True, env=env, cwd=PROJECT_DIR,
                                timeout=60, check=False)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        answer = json.loads(result.stdout)
        shown_keys = set(re.findall(r'"(\w+)":', shown))
        assert shown_keys <= keys_of(answer), f"{command}: the README shows {shown_keys - keys_of(answer)}"
        for name in ("status_code", "detail"):
            if shown_value := re.search(rf'"{name}":("[^"]*"|\d+)', shown):
                assert answer[name] == json.loads(shown_value.group(1)), f"{command}: {name}"


def test_prometheus_runs_with_both_targets_up_and_the_rules_loaded(up: UpProcess) -> None:
    url = up.wait_for(r"^\s+prometheus\s+(http://\S+)", 0).group(1)
    deadline = time.monotonic() + 120
    while True:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {target["labels"]["job"]: target["health"] for target in targets}
        if health.get("api") == "up" and health.get("pipeline") == "up":
            break
        assert time.monotonic() < deadline, f"targets not up: {health}"
        time.sleep(2)
    groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert sum(len(group["rules"]) for group in groups) > 0


def test_the_seeds_schedules_run_from_the_start(up: UpProcess) -> None:
    query = "{ schedulesOrError(repositorySelector: {repositoryLocationName: \"price_platform\","
    query += " repositoryName: \"__repository__\"}) { ... on Schedules { results { name scheduleState { status } } } } }"
    dagster = f"http://127.0.0.1:{up.ports['DAGSTER_PORT']}/graphql"
    schedules = httpx.post(dagster, json={"query": query}, timeout=60).json()["data"]["schedulesOrError"]["results"]
    status = {schedule["name"]: schedule["scheduleState"]["status"] for schedule in schedules}
    for name in ("daily_ingestion", "daily_drift", "weekly_retrain"):
        assert status.get(name) == "RUNNING", status


def test_the_history_backfills_in_at_most_three_runs(up: UpProcess) -> None:
    backfill_id = up.wait_for(r"backfill: http://\S+/runs/b/(\w+)", 0).group(1)
    query = 'query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]})'
    query += " { ... on Runs { results { status } } } }"
    dagster = f"http://127.0.0.1:{up.ports['DAGSTER_PORT']}/graphql"
    body = httpx.post(dagster, json={"query": query, "variables": {"id": backfill_id}}, timeout=60).json()
    runs = body["data"]["runsOrError"]["results"]
    # all months' ingestion in one run, one dbt build, one training run (not one run a month);
    # Dagster may put ingestion and the dbt build, partitioned alike, in one run
    assert 1 <= len(runs) <= 3 and all(run["status"] == "SUCCESS" for run in runs), runs


def test_the_console_shows_progress_and_no_third_party_transcripts(up: UpProcess) -> None:
    console = "\n".join(up.lines)
    assert re.search(r"backfill: \d+/\d+ partitions loaded, step \S+, \d+ s", console)
    assert re.search(r"^first champion: version \d+, holdout RMSLE \d\.\d{4}, ready at http://", console, re.M)
    for noise in ("Warning", "initdb", "INFO", "Traceback"):
        assert noise not in console, f"{noise!r} on the console:\n{console}"
    logs = Path(up.wait_for(r"^\s+logs\s+(\S+)", 0).group(1))
    assert (logs / "up.log").stat().st_size > 0
