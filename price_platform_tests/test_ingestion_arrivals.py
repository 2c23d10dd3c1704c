"""A second data set, described only by YAML (used cars, no time column), through the same asset and checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import psycopg2
import pytest
from conftest import drop_databases
from sqlalchemy.engine import make_url

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.defs.ingestion.assets import build_raw_sales
from price_platform.defs.ingestion.checks import build_checks
from price_platform.defs.ingestion.sensors import build_landing_sensor
from price_platform.defs.partitions import ARRIVAL_BATCHES
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.postgres import PostgresServer
from price_platform.settings import Settings

CARS_YAML = """
name: used_cars
description: Used car listings, generated for the tests.
source:
  path: cars.csv
target: price_eur
id_column: car_id
segments: [make]
numeric:
  model_year: {min: 1980, max: 2030, integer: true}
  mileage_km: {min: 0, max: 1000000}
  engine_litres: {min: 0, max: 8, nullable: true}
categorical:
  make: {allowed: [BMW, Ford, Toyota, Volkswagen]}
  fuel_type: {allowed: [diesel, electric, petrol]}
"""


def generate_cars(count: int, first_id: int, seed: int) -> pd.DataFrame:
    """Used cars with headers as a spreadsheet would have them and a price that depends on age and mileage."""
    rng = np.random.default_rng(seed)
    year = rng.integers(2005, 2023, count)
    mileage = rng.integers(5_000, 250_000, count)
    fuel = rng.choice(["petrol", "diesel", "electric"], count)
    engine = np.where(fuel == "electric", np.nan, rng.choice([1.0, 1.4, 1.6, 2.0, 3.0], count))
    price = 30_000 * 0.9 ** (2024 - year) * (1 - mileage / 500_000) + rng.normal(0, 500, count)
    return pd.DataFrame(
        {
            "Car ID": [f"car-{first_id + i}" for i in range(count)],
            "Make": rng.choice(["Toyota ", "Ford", "Volkswagen", "BMW"], count),
            "Fuel Type": fuel,
            "Model Year": year,
            "Mileage (km)": mileage,
            "Engine Litres": engine,
            "Price EUR": price.round(0).clip(min=500),
        }
    )


@pytest.fixture(scope="module")
def cars(tmp_path_factory: pytest.TempPathFactory) -> DatasetSpec:
    folder = tmp_path_factory.mktemp("cars")
    generate_cars(60, 1, seed=1).to_csv(folder / "cars.csv", index=False)
    (folder / "used_cars.yaml").write_text(CARS_YAML)
    return load_dataset(folder / "used_cars.yaml")


@pytest.fixture(scope="module")
def resources(settings: Settings, cars: DatasetSpec) -> Iterator[dict[str, dg.ConfigurableResource]]:
    """Resources on databases of their own: raw_sales takes the shape of the data set it holds."""
    name = f"{settings.database_name}_cars_{uuid.uuid4().hex[:4]}"
    yield {
        "warehouse": Warehouse(database_url=settings.database_url, database_name=name),
        "dataset": Dataset(path=str(cars.source.path.parent / "used_cars.yaml")),
    }
    drop_databases(PostgresServer(server_url=make_url(settings.database_url), database_name=name))


def materialize(cars: DatasetSpec, resources, instance: dg.DagsterInstance, key: str, run_config=None):
    return dg.materialize(
        [build_raw_sales(cars), *build_checks(cars, max_rejected_share=0.05)],
        partition_key=key,
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )


def stored(resources, key: str) -> list[tuple]:
    with psycopg2.connect(resources["warehouse"].dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select car_id, make, mileage_km, _source from price_data.raw_sales where _partition_key = %s"
            " order by _row_number",
            (key,),
        )
        return cursor.fetchall()


def test_a_data_set_without_time_is_partitioned_by_arrival_batch(cars: DatasetSpec) -> None:
    assert cars.time is None
    assert isinstance(build_raw_sales(cars).partitions_def, dg.DynamicPartitionsDefinition)


def test_the_yaml_data_sets_own_source_loads_into_an_arrival_batch(cars: DatasetSpec, resources) -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(ARRIVAL_BATCHES, ["initial"])
    result = materialize(cars, resources, instance, "initial")
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "records_meet_expectations": True, "rejected_share_within_limit": True,
    }
    rows = stored(resources, "initial")
    expected = generate_cars(60, 1, seed=1)
    assert [row[0] for row in rows] == list(expected["Car ID"])
    assert {row[1] for row in rows} == {"Toyota", "Ford", "Volkswagen", "BMW"}  # "Toyota " stripped
    assert [row[2] for row in rows] == [float(v) for v in expected["Mileage (km)"]]


def test_landed_files_become_new_arrival_batches(cars: DatasetSpec, resources, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    generate_cars(25, 1_000, seed=2).to_parquet(landing / "week two.parquet")
    sensor = build_landing_sensor(cars, landing)
    tick = sensor(dg.build_sensor_context())
    (added,) = tick.dynamic_partitions_requests
    (request,) = tick.run_requests
    assert added.partitions_def_name == ARRIVAL_BATCHES and list(added.partition_keys) == [request.partition_key]
    assert request.partition_key.endswith("_week_two")
    assert sensor(dg.build_sensor_context(cursor=tick.cursor)).run_requests == []

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(ARRIVAL_BATCHES, list(added.partition_keys))
    result = materialize(cars, resources, instance, request.partition_key, request.run_config)
    assert result.success
    rows = stored(resources, request.partition_key)
    assert len(rows) == 25 and {row[3] for row in rows} == {"landing"}


def test_a_batch_with_too_many_bad_rows_fails_its_blocking_check(cars: DatasetSpec, resources, tmp_path: Path) -> None:
    batch = generate_cars(20, 2_000, seed=3)
    batch.loc[:4, "Price EUR"] = 0  # 5 of 20 at or below target_min
    path = tmp_path / "bad_batch.csv"
    batch.to_csv(path, index=False)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(ARRIVAL_BATCHES, ["bad_batch"])
    result = materialize(cars, resources, instance, "bad_batch", {"ops": {"raw_sales": {"config": {"source_file": str(path)}}}})
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"records_meet_expectations": True, "rejected_share_within_limit": False}
    assert len(stored(resources, "bad_batch")) == 15
    with psycopg2.connect(resources["warehouse"].dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select reasons from price_data.rejected_rows where partition_key = 'bad_batch'")
        assert [row[0] for row in cursor.fetchall()] == [["price_eur: 0.0 is not greater than 0"]] * 5
