"""A new user's first day, timed: ``make up`` in a fresh clone, until the README's curl answers.

The bench clones this repository (its committed ``HEAD``) into a temporary folder and runs
``make up`` there with its own home and ports, as a user would after ``git clone``: the
virtualenv is created and installed (from the package cache, warm unless
``FIRSTRUN_COLD=1`` gives ``uv`` an empty cache and names the figures ``firstrun_cold_*``),
then the stack starts and backfills.
Three figures, each in seconds from the ``make up`` command:

- ``firstrun_urls_seconds``: every URL it printed answers;
- ``firstrun_champion_seconds``: the API's ``/ready`` answers 200 (a champion serves);
- ``firstrun_first_prediction_seconds``: the README's first ``curl`` with the printed key answers 200.

Each console line is echoed with the second it came at, which is the timeline of the run.
Everything the bench started is stopped at the end (the stack, its embedded PostgreSQL); the
temporary folder, with the services' logs under ``home/logs``, goes too unless ``FIRSTRUN_KEEP=1``.
The peer is the issue's own first measurement: 1,354 s to the first champion.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.results import Result
from price_platform.postgres import EmbeddedPostgres
from price_platform.testing import free_port

PROJECT_DIR = Path(__file__).resolve().parent.parent
COMMAND = "make bench BENCH=firstrun"
GOAL_SECONDS = 300.0
#: The first-day issue's figure before the one-run backfill: clone to first champion.
BEFORE_SECONDS = 1354.0
TIMEOUT_SECONDS = 1800.0
PORTS = ("EMBEDDED_PORT", "DAGSTER_PORT", "MLFLOW_PORT", "API_PORT", "EXPORTER_PORT", "PROMETHEUS_PORT")


class Console:
    """The lines ``make up`` printed, read in a thread of their own."""

    def __init__(self, process: subprocess.Popen, started: float) -> None:
        self.lines: list[str] = []
        self.process = process
        self.started = started
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            print(f"  {time.monotonic() - self.started:6.0f} s | {self.lines[-1]}", flush=True)

    def wait_for(self, pattern: str, deadline: float) -> re.Match:
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        tail = "\n".join(self.lines[-30:])
        raise RuntimeError(f"make up printed no line matching {pattern!r}; its last lines:\n{tail}")


def until(condition, deadline: float, poll: float = 0.5) -> None:
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    raise RuntimeError("timed out")


def readme_curl(key: str, api_port: int) -> str:
    """The README's first ``curl`` line, pointed at this stack's API port."""
    block = (PROJECT_DIR / "README.md").read_text().split("```console\n", 1)[1]
    line = next(line for line in block.splitlines() if line.startswith("$ curl"))
    return line[2:].replace("localhost:8000", f"127.0.0.1:{api_port}") + " -o /dev/null -w '%{http_code}'"


def run() -> list[Result]:
    cold = os.environ.get("FIRSTRUN_COLD") == "1"
    work = Path(tempfile.mkdtemp(prefix="pp-firstrun-"))
    work.chmod(0o755)
    repo, home = work / "repo", work / "home"
    ports = {name: free_port() for name in PORTS}
    subprocess.run(["git", "clone", "-q", str(PROJECT_DIR), str(repo)], check=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PRICE_PLATFORM_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.update({f"PRICE_PLATFORM_{name}": str(port) for name, port in ports.items()})
    env["PRICE_PLATFORM_HOME"] = str(home)
    if cold:
        env["UV_CACHE_DIR"] = str(work / "uv-cache")
    started = time.monotonic()
    deadline = started + TIMEOUT_SECONDS
    process = subprocess.Popen(
        ["make", "up"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    console = Console(process, started)
    try:
        console.wait_for(r"^Ctrl-C stops everything", deadline)
        urls = [m.group(1) for line in console.lines if (m := re.match(r"^\s+\w+\s+(http://\S+)", line))]
        for url in urls:
            until(lambda url=url: httpx.get(url, timeout=10).status_code < 500, deadline)
        urls_seconds = time.monotonic() - started
        print(f"  {len(urls)} URLs answer after {urls_seconds:.0f} s", flush=True)
        api = f"http://127.0.0.1:{ports['API_PORT']}"
        until(lambda: httpx.get(f"{api}/ready", timeout=10).status_code == 200, deadline, poll=1.0)
        champion_seconds = time.monotonic() - started
        print(f"  champion serves after {champion_seconds:.0f} s", flush=True)
        key = console.wait_for(r"API key\s+(ppk_\S+)", deadline).group(1)
        curl = readme_curl(key, ports["API_PORT"])
        answer = subprocess.run(["bash", "-c", curl], cwd=repo, capture_output=True, text=True, check=False,
                                env={**env, "KEY": key})
        if answer.stdout.strip() != "200":
            raise RuntimeError(f"the README's curl answered {answer.stdout!r}: {answer.stderr}")
        prediction_seconds = time.monotonic() - started
        console.wait_for(r"^first champion: ", deadline)
        print("  " + next(line for line in console.lines if line.startswith("first champion:")), flush=True)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        EmbeddedPostgres(home / "postgres", ports["EMBEDDED_PORT"]).stop()
        if os.environ.get("FIRSTRUN_KEEP") == "1":
            print(f"  kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    cache = "cold" if cold else "warm"
    goal = f"<= {GOAL_SECONDS:.0f} s ({cache} cache)"
    # The names are the warm figures; a cold run writes firstrun_cold_* beside them.
    prefix, command = ("firstrun_cold", f"FIRSTRUN_COLD=1 {COMMAND}") if cold else ("firstrun", COMMAND)
    print(f"  first champion {champion_seconds:.0f} s vs {BEFORE_SECONDS:.0f} s before:"
          f" {BEFORE_SECONDS / champion_seconds:.1f}x sooner", flush=True)
    return [
        Result(f"{prefix}_urls_seconds", urls_seconds, "s", f"all printed URLs answer ({cache})", True, command),
        Result(f"{prefix}_champion_seconds", champion_seconds, "s", goal, champion_seconds <= GOAL_SECONDS, command),
        Result(f"{prefix}_first_prediction_seconds", prediction_seconds, "s", goal,
               prediction_seconds <= GOAL_SECONDS, command),
    ]
