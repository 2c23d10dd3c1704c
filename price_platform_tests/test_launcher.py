"""`make up`'s stack: every service answers on embedded defaults, and stopping leaves nothing running."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from price_platform.datasets import load_dataset
from price_platform.launcher import Stack, require_source
from price_platform.postgres import embedded_server
from price_platform.settings import Settings
from price_platform.warehouse import connect
from price_platform_tests.conftest import free_port


@pytest.fixture
def home() -> Iterator[Path]:
    # Not pytest's tmp_path: another pytest starting meanwhile resets that tree to owner-only
    # permissions, which locks the embedded server's own OS user out of its data folder.
    folder = Path(tempfile.mkdtemp(prefix="pp-stack-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_stack_starts_on_embedded_defaults_and_stops_everything(home: Path) -> None:
    settings = Settings(
        home=home,
        database_url=None,
        embedded_port=free_port(),
        dagster_port=free_port(),
        mlflow_port=free_port(),
        api_port=free_port(),
        exporter_port=free_port(),
        prometheus_port=free_port(),
        auth_enabled=False,
    )
    stack = Stack(settings)
    try:
        with stack:
            expected = {"mlflow", "dagster", "api", "exporter"} | ({"prometheus"} if shutil.which("prometheus") else set())
            assert {service.name for service in stack.services} == expected
            graphql = httpx.post(f"{stack.dagster_url}/graphql", json={"query": "{ version }"}, timeout=60)
            assert graphql.json()["data"]["version"]
            assets = httpx.post(
                f"{stack.dagster_url}/graphql",
                json={"query": "{ assetNodes { assetKey { path } } }"},
                timeout=120,
            ).json()["data"]["assetNodes"]
            keys = {"/".join(node["assetKey"]["path"]) for node in assets}
            assert {"raw_sales", "features", "candidate_model", "production_model", "drift_report"} <= keys
            assert httpx.get(f"{stack.tracking_uri}/health", timeout=30).status_code == 200
            assert httpx.get(f"{stack.api_url}/health", timeout=30).status_code == 200
            assert httpx.get(f"{stack.api_url}/ready", timeout=30).status_code == 503  # no champion yet
            assert httpx.get(f"http://127.0.0.1:{settings.exporter_port}/metrics", timeout=30).status_code == 200
        assert not any(service.running() for service in stack.services)
    finally:
        embedded_server(settings).stop()
    assert not embedded_server(settings).is_running()


def test_a_table_without_time_backfills_its_source_and_gets_a_first_champion(home: Path) -> None:
    """`make up` on a YAML-described table with no time column: its own source is the first arrival batch,
    and ingestion, the dbt build and training follow each other to a first champion with no other command."""
    from price_platform_tests.test_ingestion_arrivals import CARS_YAML, generate_cars

    generate_cars(400, 1, seed=3).to_csv(home / "cars.csv", index=False)
    (home / "used_cars.yaml").write_text(CARS_YAML)
    settings = Settings(
        home=home / "state",
        database_url=None,
        dataset=home / "used_cars.yaml",
        embedded_port=free_port(),
        dagster_port=free_port(),
        mlflow_port=free_port(),
        api_port=free_port(),
        exporter_port=free_port(),
        prometheus_port=free_port(),
        auth_enabled=False,
        n_trials=3,
    )
    lines: list[str] = []
    stack = Stack(settings)
    try:
        with stack:
            stack.backfill(None, lambda line, progress=False: lines.append(line), poll=2.0)
            with connect(stack.server.dsn()) as connection, connection.cursor() as cursor:
                cursor.execute("select _partition_key, count(*) from price_data.raw_sales group by 1")
                assert cursor.fetchall() == [("initial_used_cars", 400)]  # source.path, as one batch
            info = stack.wait_for_champion(None, timeout=600)
            assert info["version"] == "1"
            (record,) = info["feature_schema"]["$defs"].values()
            assert set(record["properties"]) >= {"make", "mileage_km", "model_year"}
            answer = httpx.post(
                f"{stack.api_url}/predict",
                json={"make": "Ford", "fuel_type": "petrol", "model_year": 2018, "mileage_km": 40000,
                      "engine_litres": 1.4},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
    finally:
        embedded_server(settings).stop()
    assert any(line.startswith("backfill: done") for line in lines), lines


def test_a_data_set_without_a_source_of_its_own_is_not_backfilled_and_is_told_of_the_landing_folder(
    home: Path,
) -> None:
    from price_platform_tests.test_ingestion_arrivals import CARS_YAML

    (home / "used_cars.yaml").write_text(CARS_YAML)
    require_source(load_dataset(home / "used_cars.yaml"), home / "landing")  # source.path: backfilled
    (home / "landed_only.yaml").write_text(CARS_YAML.replace("source:\n  path: cars.csv\n", ""))
    expected = f"nothing to backfill: put its CSV/Parquet files in the landing folder {home / 'landing'}"
    with pytest.raises(RuntimeError, match=re.escape(expected)):
        require_source(load_dataset(home / "landed_only.yaml"), home / "landing")
