"""Backup -> restore into empty databases -> the API serves the same champion with the same predictions.

A real MLflow server (backend in the platform's ``_mlflow`` database, artifacts in a local
folder) holds a registered champion; the API answers from it. After ``backup``, the MLflow
server is gone and a restore into empty databases and an empty artifact folder is served by a
new MLflow server over the restored store: the API must load the same version and answer
every record with the same price and interval.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from conftest import drop_databases, free_port, wait_for_port
from litestar.testing import TestClient
from sqlalchemy.engine import make_url
from test_serving_support import fit_pipeline, records, split, wait_ready

from price_platform.datasets import load_dataset
from price_platform.modeling import read_sample
from price_platform.operations.backup import backup
from price_platform.operations.restore import restore
from price_platform.postgres import PostgresServer
from price_platform.registry.promotion import Verdict, promote
from price_platform.registry.versions import register_candidate
from price_platform.settings import DEFAULT_DATASET, Settings
from price_platform.warehouse import migrate
from serving.app import create_app

MODEL = "roundtrip-model"


class MlflowServer:
    """An MLflow tracking server of this test (own process group), over one backend and artifact folder."""

    def __init__(self, backend: str, artifacts: Path, log: Path) -> None:
        self.port = free_port()
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        command = [
            str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", backend, "--artifacts-destination", str(artifacts), "--workers", "1",
        ]
        self.process = subprocess.Popen(
            command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            wait_for_port(self.port, timeout=180, process=self.process)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def platforms(system_postgres_url: str) -> Iterator[tuple[PostgresServer, PostgresServer]]:
    url = make_url(system_postgres_url)
    source = PostgresServer(server_url=url, database_name=f"pp_rt_{uuid.uuid4().hex[:8]}")
    target = PostgresServer(server_url=url, database_name=f"pp_rt_{uuid.uuid4().hex[:8]}")
    yield source, target
    drop_databases(source)
    drop_databases(target)


def serve(settings: Settings, server: PostgresServer, frame) -> tuple[dict, list[dict]]:  # noqa: ANN001
    """/model-info and the /predict answers of the API for ``frame``'s records."""
    spec = load_dataset(settings.dataset)
    with TestClient(create_app(settings, spec=spec, dsn=server.dsn())) as client:
        wait_ready(client)
        info = client.get("/model-info").json()
        response = client.post("/predict", json=records(spec, frame))
        assert response.status_code == 200, response.text
    return info, response.json()["predictions"]


def test_a_restored_backup_serves_the_same_champion_with_the_same_predictions(platforms, tmp_path):
    source, target = platforms
    spec = load_dataset(DEFAULT_DATASET)
    train, holdout = split(spec, read_sample(spec))
    source.ensure_databases()
    migrate(source.dsn())
    source_artifacts = tmp_path / "source" / "mlartifacts"
    source_artifacts.mkdir(parents=True)
    tracking = MlflowServer(source.url("mlflow"), source_artifacts, tmp_path / "mlflow-source.log")
    try:
        version = register_candidate(
            tracking.url, MODEL, fit_pipeline(spec, train, trees=30), train[spec.features], dsn=source.dsn(),
            interval_log_halfwidth=0.2, data_version="roundtrip", metrics={"holdout_rmsle": 0.1},
        ).version
        promote(tracking.url, MODEL, version, dsn=source.dsn(), actor="roundtrip", check=lambda _: Verdict(True, "test"))
        settings = Settings(
            home=tmp_path / "source", database_url=source.server_url.render_as_string(hide_password=False),
            database_name=source.database_name, mlflow_tracking_uri=tracking.url, model_name=MODEL,
            auth_enabled=False, rate_limit_per_minute=1_000_000,
        )
        info_before, before = serve(settings, source, holdout.head(40))
    finally:
        tracking.stop()

    folder = backup(source, source_artifacts, tmp_path / "backups")
    restored_artifacts = tmp_path / "restored" / "mlartifacts"
    restore(target, folder, restored_artifacts)

    tracking = MlflowServer(target.url("mlflow"), restored_artifacts, tmp_path / "mlflow-restored.log")
    try:
        restored = Settings(
            home=tmp_path / "restored", database_url=target.server_url.render_as_string(hide_password=False),
            database_name=target.database_name, mlflow_tracking_uri=tracking.url, model_name=MODEL,
            auth_enabled=False, rate_limit_per_minute=1_000_000,
        )
        info_after, after = serve(restored, target, holdout.head(40))
    finally:
        tracking.stop()

    assert info_after["version"] == info_before["version"] == version
    assert info_after["data_version"] == "roundtrip"
    assert [p["price"] for p in after] == [p["price"] for p in before]
    assert [(p["lower"], p["upper"]) for p in after] == [(p["lower"], p["upper"]) for p in before]
    with psycopg2.connect(target.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("select to_version, action, actor from model_registry.deployments")
        assert cursor.fetchall() == [(version, "promote", "roundtrip")]
    connection.close()
