"""``price-platform up``: the whole platform on one machine, started with one command.

:class:`Stack` starts (or reuses) the PostgreSQL server, applies migrations, then runs the
MLflow tracking server, Dagster (webserver + daemon, instance storage in PostgreSQL), the
prediction API and the pipeline-metrics exporter as child processes. ``up`` launches the
initial backfill of the asset graph through Dagster's GraphQL API, prints the URLs and an
admin API key, and stops everything it started on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

from price_platform.datasets import load_dataset
from price_platform.partitions import sales_partitions
from price_platform.postgres import PostgresServer, ensure_server
from price_platform.settings import Settings, get_settings
from price_platform.warehouse import migrate

PROJECT_DIR = Path(__file__).resolve().parent.parent

#: Asset groups of the initial backfill's two stages: the data, then features, training and promotion.
INGESTION_GROUPS = ("ingestion",)
MODEL_GROUPS = ("features", "training", "registry")
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
        log_file = (log_dir / f"{self.name}.log").open("ab")
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
        self.server: PostgresServer = ensure_server(settings)
        migrate(self.server.dsn())
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
            "PRICE_PLATFORM_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri
            or f"http://127.0.0.1:{settings.mlflow_port}",
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
                    "-h", "127.0.0.1", "-p", str(settings.dagster_port),
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
        return services

    def launch_backfill(self, groups: tuple[str, ...], until: str | None = None) -> str:
        """Ask Dagster to materialise the assets of ``groups``; return the backfill id.

        ``until`` (``YYYY-MM``) stops the data partitions at that month, so that the rest of the
        history can be replayed later.
        """
        from price_platform.definitions import build_definitions

        graph = build_definitions(self.settings).resolve_asset_graph()
        keys = [{"path": key.path} for key in graph.get_all_asset_keys() if graph.get(key).group_name in groups]
        params: dict[str, object] = {"assetSelection": keys, "title": f"initial backfill: {', '.join(groups)}"}
        partitions = sales_partitions(load_dataset(self.settings.dataset))
        if until:
            params["partitionNames"] = [key for key in partitions.get_partition_keys() if key[:7] <= until]
        else:
            params["allPartitions"] = True
        result = self._graphql(LAUNCH_PARTITION_BACKFILL_MUTATION, {"backfillParams": params})
        outcome = result["launchPartitionBackfill"]
        if outcome["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"Dagster refused the backfill: {outcome}")
        return outcome["backfillId"]

    def backfill(self, until: str | None, report: Callable[[str], None], poll: float = 5.0) -> None:
        """The initial backfill in two stages: every month's ingestion first, then the rest.

        Dagster's asset backfill starts downstream work as soon as an upstream partition is
        done, which would run dbt once per month; after the ingestion stage, dbt builds the
        whole window in one run and training follows once.
        """
        for groups in (INGESTION_GROUPS, MODEL_GROUPS):
            backfill_id = self.launch_backfill(groups, until)
            report(f"backfill {', '.join(groups)}: {self.dagster_url}/runs/b/{backfill_id}")
            while (status := self.backfill_status(backfill_id)) not in BACKFILL_DONE:
                time.sleep(poll)
            if status not in BACKFILL_SUCCEEDED:
                raise RuntimeError(f"backfill {backfill_id} ended {status}: {self.dagster_url}/runs/b/{backfill_id}")
            report(f"backfill {', '.join(groups)}: done")

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

    key, _key_id = create_key(dsn, "admin", "created by price-platform up")
    return key


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
    with Stack(settings) as stack:
        print("\nprice-platform is up:")
        for service in stack.services:
            print(f"  {service.name:<9} {service.url}")
        print(f"  postgres  {stack.server.dsn()}")
        print(f"  logs      {stack.log_dir}")
        if settings.auth_enabled:
            print(f"  API key   {create_admin_key(stack.server.dsn())}  (role admin; header X-API-Key)")
        print("Ctrl-C stops everything.", flush=True)
        if not args.no_backfill:
            threading.Thread(
                target=stack.backfill,
                args=(args.until or settings.backfill_until, lambda line: print(line, flush=True)),
                name="initial-backfill",
                daemon=True,
            ).start()
        while not stopping and stack.healthy():
            time.sleep(1)
        if not stack.healthy():
            print(f"a service stopped; see {stack.log_dir}", file=sys.stderr)
            return 1
    return 0
