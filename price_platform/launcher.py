"""``price-platform up``: the whole platform on one machine, started with one command.

:class:`Stack` starts (or reuses) the PostgreSQL server, applies migrations, then runs the
MLflow tracking server, Dagster (webserver + daemon, instance storage in PostgreSQL), the
prediction API, the pipeline-metrics exporter and, when its binary is installed, Prometheus
as child processes. ``up`` launches the initial backfill of the asset graph through Dagster's
GraphQL API, prints the URLs and an admin API key, shows one progress line of the backfill
until the first champion answers, and stops everything it started on Ctrl-C or SIGTERM.
Third-party transcripts and warnings go to the log files, not to the console.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import yaml
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION
from sqlalchemy.engine import make_url

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.defs.partitions import ARRIVAL_BATCHES, sales_partitions
from price_platform.postgres import PostgresServer
from price_platform.settings import Settings, get_settings
from price_platform.warehouse import connect, platform_server

PROJECT_DIR = Path(__file__).resolve().parent.parent

#: Asset groups of the initial backfill: the data, its features, training and promotion. Monthly
#: ingestion and the dbt build share a single-run backfill policy, so all months' ingestion and
#: one dbt build are one run, then training is another. An arrival batch is three runs one after
#: the other: its ingestion, its dbt build (the dbt assets run one batch per run), then training.
BACKFILL_GROUPS = ("ingestion", "features", "training", "registry")
PROMETHEUS_CONFIG_DIR = PROJECT_DIR / "grafana" / "prometheus"
#: The Dagster webserver keeps a pool of storage connections; after PostgreSQL restarts, a pooled
#: connection is dead and its first page answers 500. Recycling at every checkout (age > 0 s) is
#: the pre-ping the CLI offers: a fresh loopback connection per checkout, as the daemon's and runs'
#: storage (NullPool) always make.
WEBSERVER_DB_OPTIONS = ("--db-pool-recycle", "0")
BACKFILL_SUCCEEDED = {"COMPLETED_SUCCESS", "COMPLETED"}
BACKFILL_DONE = BACKFILL_SUCCEEDED | {"COMPLETED_FAILED", "FAILED", "CANCELED"}

BACKFILL_STATUS_QUERY = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
}
"""

BACKFILL_RUNS_QUERY = """
query($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { status stepStats { stepKey status } } }
  }
}
"""

ASSET_GROUPS_QUERY = "{ assetNodes { assetKey { path } groupName } }"

LOCATION_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""

ADD_DYNAMIC_PARTITION_MUTATION = """
mutation($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

ACTIVE_RUNS_QUERY = """
{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) {
    ... on Runs { results { runId } } } }
"""


@dataclass
class Service:
    """A child process of the local stack, with the port it must open and where it logs."""

    name: str
    command: list[str]
    port: int
    url: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self, log_dir: Path) -> None:
        with (log_dir / f"{self.name}.log").open("ab") as log_file:  # the child keeps its own copy
            self.process = subprocess.Popen(
                self.command, stdout=log_file, stderr=subprocess.STDOUT, env=self.env, cwd=PROJECT_DIR,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.process.returncode}; see its log")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} did not listen on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if not self.running():
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Stack:
    """The platform's processes on this machine, started together and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: PostgresServer = platform_server(settings)
        self.log_dir = settings.home / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = self._environment()
        self.services = self._services()

    @property
    def tracking_uri(self) -> str:
        return self.env["PRICE_PLATFORM_MLFLOW_TRACKING_URI"]

    @property
    def dagster_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.dagster_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def __enter__(self) -> Stack:
        try:
            for service in self.services:
                service.start(self.log_dir)
            for service in self.services:
                service.wait_until_listening(timeout=300)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def healthy(self) -> bool:
        return all(service.running() for service in self.services)

    def _environment(self) -> dict[str, str]:
        """Environment of the child processes: these settings, pointed at the running server."""
        settings, server = self.settings, self.server
        bin_dir = str(Path(sys.executable).parent)
        dagster_home = settings.home / "dagster"
        dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_DIR / "dagster.yaml", dagster_home / "dagster.yaml")
        inherited = {
            f"PRICE_PLATFORM_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in settings.model_dump().items()
            if value is not None
        }
        return {
            **os.environ,
            **inherited,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(settings.threads)),
            "DAGSTER_HOME": str(dagster_home),
            "PRICE_PLATFORM_DATABASE_URL": server.server_url.render_as_string(hide_password=False),
            "PRICE_PLATFORM_DAGSTER_STORAGE_URL": server.url("dagster"),
            # MLflow's server otherwise starts a pool of background job workers nobody here uses.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PRICE_PLATFORM_MLFLOW_TRACKING_URI": settings.tracking_uri,
        }

    def _services(self) -> list[Service]:
        """MLflow (unless a tracking server is configured), Dagster, the API and the exporter."""
        settings, server, env = self.settings, self.server, self.env
        bin_dir = Path(sys.executable).parent
        services = []
        if not settings.mlflow_tracking_uri:
            services.append(
                Service(
                    name="mlflow",
                    command=[
                        str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(settings.mlflow_port),
                        "--backend-store-uri", server.url("mlflow"),
                        "--artifacts-destination", str(settings.artifacts), "--workers", "1",
                    ],
                    port=settings.mlflow_port,
                    url=f"http://127.0.0.1:{settings.mlflow_port}",
                    env=env,
                )
            )
        services += [
            Service(
                name="dagster",
                command=[
                    str(bin_dir / "dagster"), "dev", "-w", str(PROJECT_DIR / "workspace.yaml"),
                    "-h", "127.0.0.1", "-p", str(settings.dagster_port), *WEBSERVER_DB_OPTIONS,
                ],
                port=settings.dagster_port,
                url=self.dagster_url,
                env=env,
            ),
            Service(
                name="api",
                command=[str(bin_dir / "price-platform"), "serve", "--workers", "1"],
                port=settings.api_port,
                url=f"{self.api_url}/schema/swagger",
                env=env,
            ),
            Service(
                name="exporter",
                command=[str(bin_dir / "price-platform"), "exporter"],
                port=settings.exporter_port,
                url=f"http://{settings.api_host}:{settings.exporter_port}/metrics",
                env=env,
            ),
        ]
        prometheus = shutil.which("prometheus")
        if prometheus:
            config = write_prometheus_config(self.settings, self.settings.home / "prometheus")
            services.append(
                Service(
                    name="prometheus",
                    command=[
                        prometheus, f"--config.file={config}", f"--storage.tsdb.path={config.parent / 'data'}",
                        f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
                    ],
                    port=settings.prometheus_port,
                    url=f"http://127.0.0.1:{settings.prometheus_port}",
                    env=env,
                )
            )
        return services

    def launch_backfill(self, groups: tuple[str, ...] = BACKFILL_GROUPS, until: str | None = None) -> str:
        """Ask Dagster to materialise the assets of ``groups``; return the backfill id.

        ``until`` (``YYYY-MM``) stops the data partitions at that month, so that the rest of the
        history can be replayed later. A data set without time has no partitions yet: its own
        source becomes the first arrival batch. A data set with no source of its own has nothing
        to backfill (:func:`require_source`).
        """
        spec = load_dataset(self.settings.dataset)
        require_source(spec, self.settings.landing)
        self.wait_for_code_location()
        nodes = self._graphql(ASSET_GROUPS_QUERY, {})["assetNodes"]
        keys = [{"path": node["assetKey"]["path"]} for node in nodes if node["groupName"] in groups]
        params: dict[str, object] = {"assetSelection": keys, "title": f"initial backfill: {', '.join(groups)}"}
        if spec.time is None:
            params["partitionNames"] = [self.add_arrival_batch(first_batch_key(spec))]
        elif until:
            partitions = sales_partitions(spec)
            params["partitionNames"] = [key for key in partitions.get_partition_keys() if key[:7] <= until]
        else:
            params["allPartitions"] = True
        result = self._graphql(LAUNCH_PARTITION_BACKFILL_MUTATION, {"backfillParams": params})
        outcome = result["launchPartitionBackfill"]
        if outcome["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"Dagster refused the backfill: {outcome}")
        return outcome["backfillId"]

    def wait_for_code_location(self, timeout: float = 300.0) -> None:
        """Wait until Dagster has loaded the platform's definitions; raise with its error if they failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entries = self._graphql(LOCATION_QUERY, {})["workspaceOrError"].get("locationEntries", [])
            for entry in entries:
                outcome = entry.get("locationOrLoadError") or {}
                if outcome.get("__typename") == "PythonError":
                    raise RuntimeError(f"Dagster could not load the definitions: {outcome['message']}")
                if entry["loadStatus"] == "LOADED" and outcome:
                    return
            time.sleep(1)
        raise TimeoutError(f"Dagster did not load the definitions within {timeout:.0f} s; see {self.log_dir}")

    def add_arrival_batch(self, key: str) -> str:
        """Add an arrival-batch partition (data sets without time); return its key."""
        selector = {"repositoryLocationName": "price_platform", "repositoryName": "__repository__"}
        outcome = self._graphql(
            ADD_DYNAMIC_PARTITION_MUTATION, {"selector": selector, "name": ARRIVAL_BATCHES, "key": key}
        )["addDynamicPartition"]
        if outcome["__typename"] not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
            raise RuntimeError(f"Dagster refused the arrival batch {key}: {outcome}")
        return key

    def backfill(self, until: str | None, report: Callable[..., None], poll: float = 5.0) -> str:
        """The initial backfill: the data's ingestion, its dbt build, then training (see ``BACKFILL_GROUPS``).

        ``report`` gets the backfill's URL, then at each poll a line marked ``progress=True``:
        partitions loaded of the total, the step that runs, the time since the start. Returns
        the backfill id.
        """
        started = time.monotonic()
        backfill_id = self.launch_backfill(BACKFILL_GROUPS, until)
        report(f"backfill: {self.dagster_url}/runs/b/{backfill_id}")
        total = self.partitions_requested(backfill_id)
        while (status := self.backfill_status(backfill_id)) not in BACKFILL_DONE:
            report(
                f"backfill: {self.partitions_loaded_since(started)}/{total} partitions loaded,"
                f" step {self.current_step(backfill_id) or 'starting'}, {time.monotonic() - started:.0f} s",
                progress=True,
            )
            time.sleep(poll)
        if status not in BACKFILL_SUCCEEDED:
            raise RuntimeError(f"backfill {backfill_id} ended {status}: {self.dagster_url}/runs/b/{backfill_id}"
                               + "".join(f"\n  {failure}" for failure in self.step_failures(backfill_id)))
        report(f"backfill: done in {time.monotonic() - started:.0f} s")
        return backfill_id

    def step_failures(self, backfill_id: str) -> list[str]:
        """``step: its error`` (its first line, the lines that say error, and the last line of the exception
        that caused it, the user code's own) for each failed step of the backfill's failed runs."""
        query = """query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}],
            statuses: [FAILURE]}) { ... on Runs { results { eventConnection { events { __typename
            ... on ExecutionStepFailureEvent { stepKey error { message causes { message } } } } } } } } }"""
        runs = self._graphql(query, {"id": backfill_id})["runsOrError"].get("results", [])
        failures = []
        for run in runs:
            for event in run["eventConnection"]["events"]:
                if event["__typename"] == "ExecutionStepFailureEvent":
                    error = event["error"] or {}
                    text = "\n".join([error.get("message", ""), *(cause["message"] for cause in error.get("causes", []))])
                    lines = [line.strip() for line in text.splitlines() if line.strip()]
                    said = [line for line in lines[1:] if "error" in line.lower()][:3]  # dbt's own lines
                    shown = lines[:1] + [line for line in said + lines[-1:] if line not in lines[:1]]
                    failures.append(f"{event['stepKey']}: {' | '.join(line[:300] for line in shown)}")
        return failures

    def partitions_requested(self, backfill_id: str) -> int:
        """How many data partitions the backfill covers."""
        query = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
            ... on PartitionBackfill { partitionNames } } }"""
        names = self._graphql(query, {"id": backfill_id})["partitionBackfillOrError"].get("partitionNames")
        return len(names or [])

    def partitions_loaded_since(self, started: float) -> int:
        """Partitions whose sales were loaded since ``started`` (a ``time.monotonic()``)."""
        seconds = time.monotonic() - started
        with connect(self.server.dsn()) as connection, connection.cursor() as cursor:
            cursor.execute("select to_regclass('price_data.loads') is not null")
            if not cursor.fetchone()[0]:
                return 0
            cursor.execute(
                "select count(distinct partition_key) from price_data.loads"
                " where loaded_at >= now() - make_interval(secs => %s)",
                (seconds,),
            )
            return int(cursor.fetchone()[0])

    def current_step(self, backfill_id: str) -> str | None:
        """The step key of the backfill's run that is in progress, if any."""
        runs = self._graphql(BACKFILL_RUNS_QUERY, {"id": backfill_id})["runsOrError"].get("results", [])
        for run in runs:
            for step in run.get("stepStats") or []:
                if step["status"] == "IN_PROGRESS":
                    return step["stepKey"]
        return None

    def wait_for_champion(self, api_key: str | None, timeout: float, poll: float = 2.0) -> dict:
        """Wait until the API answers ``/ready`` with 200; return its ``/model-info``."""
        headers = {"X-API-Key": api_key} if api_key else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/ready", timeout=10).status_code == 200:
                    return httpx.get(f"{self.api_url}/model-info", headers=headers, timeout=10).raise_for_status().json()
            except httpx.HTTPError:
                pass
            time.sleep(poll)
        raise TimeoutError(f"the API did not serve a champion within {timeout:.0f} s")

    def backfill_status(self, backfill_id: str) -> str:
        """Dagster's status of a backfill (``REQUESTED``, ``COMPLETED_SUCCESS``, ``COMPLETED_FAILED``, ...)."""
        outcome = self._graphql(BACKFILL_STATUS_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        if outcome["__typename"] != "PartitionBackfill":
            raise RuntimeError(f"cannot read backfill {backfill_id}: {outcome}")
        return outcome["status"]

    def active_runs(self) -> int:
        """How many Dagster runs are queued or running."""
        return len(self._graphql(ACTIVE_RUNS_QUERY, {})["runsOrError"]["results"])

    def _graphql(self, query: str, variables: dict[str, object]) -> dict:
        response = httpx.post(f"{self.dagster_url}/graphql", json={"query": query, "variables": variables}, timeout=300)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"Dagster GraphQL error: {body['errors']}")
        return body["data"]


def create_admin_key(dsn: str) -> str:
    """A fresh admin API key for the person who ran ``up`` (stored hashed)."""
    from serving.auth import create_key

    _key_id, key = create_key(dsn, "admin", "created by price-platform up")
    return key


def require_source(spec: DatasetSpec, landing: Path) -> None:
    """Raise, saying where its records go instead, when the data set has no source for the first backfill."""
    if spec.source.path is None and spec.source.query is None:
        raise RuntimeError(
            f"data set {spec.name!r} has no source.path or source.query, so there is nothing to backfill:"
            f" put its CSV/Parquet files in the landing folder {landing}"
        )


def first_batch_key(spec: DatasetSpec) -> str:
    """Arrival-batch key of a data set's own source, loaded by the initial backfill."""
    return f"initial_{spec.name}"


def write_prometheus_config(settings: Settings, folder: Path) -> Path:
    """The project's scrape config and alert rules, pointed at this stack's API and exporter ports."""
    folder.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((PROMETHEUS_CONFIG_DIR / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS_CONFIG_DIR / name) for name in config["rule_files"]]
    targets = {
        "api": f"127.0.0.1:{settings.api_port}",
        "pipeline": f"127.0.0.1:{settings.exporter_port}",
        "prometheus": f"127.0.0.1:{settings.prometheus_port}",
    }
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def redacted(url: str) -> str:
    """A database URL with its password masked, for the console."""
    return make_url(url).render_as_string(hide_password=True)


def quiet_console(log_dir: Path) -> None:
    """Send log records and Python warnings to ``<log_dir>/up.log``; the console keeps ``up``'s own lines."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "up.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warnings.simplefilter("default")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-backfill", action="store_true", help="start the stack without the initial backfill")
    parser.add_argument("--until", default=None, help="backfill data up to this month, YYYY-MM (default: settings)")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    quiet_console(settings.home / "logs")
    print("starting PostgreSQL, MLflow, Dagster, the API and the exporter ...", flush=True)
    with Stack(settings) as stack:
        key = create_admin_key(stack.server.dsn()) if settings.auth_enabled else None
        print_urls(stack, key)
        if not args.no_backfill:
            threading.Thread(
                target=first_champion,
                args=(stack, args.until or settings.backfill_until, key),
                name="initial-backfill",
                daemon=True,
            ).start()
        while not stopping and stack.healthy():
            time.sleep(1)
        if not stack.healthy():
            print(f"a service stopped; see {stack.log_dir}", file=sys.stderr)
            return 1
    return 0


def print_urls(stack: Stack, key: str | None) -> None:
    """The console's first block: every URL, the database (password masked), the logs and the key."""
    print("\nprice-platform is up (every port listens on 127.0.0.1 only):")
    for service in stack.services:
        print(f"  {service.name:<10} {service.url}")
    if not any(service.name == "prometheus" for service in stack.services):
        print("  prometheus not installed: `make system-deps` installs it, then `make up` starts it")
    print(f"  postgres   {redacted(stack.server.dsn())}")
    print(f"  logs       {stack.log_dir}")
    if key:
        print(f"  API key    {key}  (role admin; header X-API-Key)")
    print("Ctrl-C stops everything.", flush=True)


def first_champion(stack: Stack, until: str | None, key: str | None) -> None:
    """Run the initial backfill with a progress line, then say which champion serves."""
    started = time.monotonic()
    console = ProgressConsole(interactive=sys.stdout.isatty())
    try:
        stack.backfill(until, console.report)
        info = stack.wait_for_champion(key, timeout=600)
    except (RuntimeError, TimeoutError, httpx.HTTPError) as error:
        console.report(f"initial backfill failed: {error}")
        return
    holdout = info.get("metrics", {}).get("holdout_rmsle")
    score = f"holdout RMSLE {holdout:.4f}" if isinstance(holdout, (int, float)) else "no holdout RMSLE recorded"
    console.report(
        f"first champion: version {info.get('version')}, {score}, ready at {stack.api_url}/predict"
        f" ({time.monotonic() - started:.0f} s after the backfill started)"
    )


class ProgressConsole:
    """Prints ``up``'s lines; progress lines overwrite each other on a terminal, and appear every 30 s in a log."""

    PROGRESS_EVERY_SECONDS = 30.0

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self.on_progress_line = False
        self.last_progress = -self.PROGRESS_EVERY_SECONDS

    def report(self, line: str, progress: bool = False) -> None:
        if progress and self.interactive:
            print(f"\r{line:<100}", end="", flush=True)
            self.on_progress_line = True
            return
        if progress:
            if time.monotonic() - self.last_progress < self.PROGRESS_EVERY_SECONDS:
                return
            self.last_progress = time.monotonic()
        if self.on_progress_line:
            print()
            self.on_progress_line = False
        print(line, flush=True)
