"""``price-platform up``: the whole platform on one machine, started with one command.

Starts (or reuses) the PostgreSQL server, applies migrations, then runs the MLflow tracking
server, Dagster (webserver + daemon, instance storage in PostgreSQL) and the prediction API
as child processes, launches the initial backfill of the asset graph through Dagster's
GraphQL API and prints the URLs. Ctrl-C (or SIGTERM) stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

from price_platform.datasets import load_dataset
from price_platform.partitions import sales_partitions
from price_platform.postgres import PostgresServer, ensure_server
from price_platform.settings import Settings, get_settings
from price_platform.warehouse import migrate

PROJECT_DIR = Path(__file__).resolve().parent.parent


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
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def stack_environment(settings: Settings, server: PostgresServer) -> dict[str, str]:
    """Environment of the child processes: the same settings, pointed at the running server."""
    bin_dir = str(Path(sys.executable).parent)
    dagster_home = settings.home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_DIR / "dagster.yaml", dagster_home / "dagster.yaml")
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(settings.threads)),
        "DAGSTER_HOME": str(dagster_home),
        "PRICE_PLATFORM_HOME": str(settings.home),
        "PRICE_PLATFORM_DATABASE_URL": server.url("platform"),
        "PRICE_PLATFORM_DAGSTER_STORAGE_URL": server.url("dagster"),
        "PRICE_PLATFORM_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri
        or f"http://127.0.0.1:{settings.mlflow_port}",
    }


def stack_services(settings: Settings, server: PostgresServer, env: dict[str, str]) -> list[Service]:
    """MLflow, Dagster and the prediction API, in the order they start."""
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
    services.append(
        Service(
            name="dagster",
            command=[
                str(bin_dir / "dagster"), "dev", "-w", str(PROJECT_DIR / "workspace.yaml"),
                "-h", "127.0.0.1", "-p", str(settings.dagster_port),
            ],
            port=settings.dagster_port,
            url=f"http://127.0.0.1:{settings.dagster_port}",
            env=env,
        )
    )
    services.append(
        Service(
            name="api",
            command=[str(bin_dir / "price-platform"), "serve", "--workers", "1"],
            port=settings.api_port,
            url=f"http://{settings.api_host}:{settings.api_port}/schema/swagger",
            env=env,
        )
    )
    return services


def launch_backfill(dagster_url: str, settings: Settings) -> str:
    """Ask Dagster to materialise the whole asset graph (up to ``backfill_until``); return its id."""
    from price_platform.definitions import build_definitions

    defs = build_definitions(settings)
    keys = [{"path": key.path} for key in defs.resolve_asset_graph().get_all_asset_keys()]
    params: dict[str, object] = {"assetSelection": keys, "title": "initial backfill"}
    if settings.backfill_until:
        partitions = sales_partitions(load_dataset(settings.dataset))
        params["partitionNames"] = [k for k in partitions.get_partition_keys() if k[:7] <= settings.backfill_until]
    else:
        params["allPartitions"] = True
    response = httpx.post(
        f"{dagster_url}/graphql",
        json={"query": LAUNCH_PARTITION_BACKFILL_MUTATION, "variables": {"backfillParams": params}},
        timeout=120,
    )
    response.raise_for_status()
    result = response.json()["data"]["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"Dagster refused the backfill: {result}")
    return result["backfillId"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-backfill", action="store_true", help="start the stack without the initial backfill")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    server = ensure_server(settings)
    migrate(server.dsn())
    env = stack_environment(settings, server)
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    services = stack_services(settings, server, env)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for service in services:
            service.start(log_dir)
        for service in services:
            service.wait_until_listening(timeout=180)
        print("\nprice-platform is up:")
        for service in services:
            print(f"  {service.name:<8} {service.url}")
        print(f"  postgres {server.dsn()}")
        print(f"  logs     {log_dir}")
        if not args.no_backfill:
            backfill = launch_backfill(services[-2].url, settings)
            print(f"  backfill {services[-2].url}/runs/b/{backfill}")
        print("Ctrl-C stops everything.", flush=True)
        while not stopping and all(s.process and s.process.poll() is None for s in services):
            time.sleep(1)
    finally:
        for service in reversed(services):
            service.stop()
    return 0
