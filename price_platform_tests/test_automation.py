"""The first model follows the first features by itself, once: no hand-launched training run for a new table."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from price_platform.definitions import build_definitions
from price_platform.settings import DEFAULT_DATASET, Settings
from price_platform_tests.test_ingestion_arrivals import CARS_YAML

RAW_SALES = dg.AssetKey("raw_sales")
FEATURES = dg.AssetKey("features")
FIRST_MODEL_CHAIN = [
    dg.AssetKey(name)
    for name in ("training_dataset", "hyperparameter_study", "candidate_model", "model_evaluation", "production_model")
]


def definitions(table: str, home: Path) -> dg.Definitions:
    dataset = DEFAULT_DATASET
    if table == "without_time":
        dataset = home / "used_cars.yaml"
        dataset.write_text(CARS_YAML)
        (home / "cars.csv").write_text("")
    return build_definitions(Settings(home=home, dataset=dataset))


def materialize_every_partition(defs: dg.Definitions, instance: dg.DagsterInstance, key: dg.AssetKey) -> None:
    """Record ``key`` as materialized in all its partitions (what the first backfill leaves)."""
    partitions = defs.resolve_asset_graph().get(key).partitions_def
    keys = partitions.get_partition_keys(dynamic_partitions_store=instance) if partitions else [None]
    for partition in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


@pytest.mark.parametrize("table", ["bundled", "without_time"])
def test_the_first_model_is_requested_once_its_features_exist_and_never_again(table: str, tmp_path: Path) -> None:
    defs = definitions(table, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    if table == "without_time":
        instance.add_dynamic_partitions("arrival_batches", ["initial_used_cars"])
    sensor = defs.resolve_sensor_def("default_automation_condition_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert all(before.get_num_requested(key) == 0 for key in FIRST_MODEL_CHAIN)  # nothing to train on yet

    materialize_every_partition(defs, instance, RAW_SALES)
    materialize_every_partition(defs, instance, FEATURES)
    ready = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert [ready.get_num_requested(key) for key in FIRST_MODEL_CHAIN] == [1] * len(FIRST_MODEL_CHAIN)

    for key in FIRST_MODEL_CHAIN:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key))
    materialize_every_partition(defs, instance, FEATURES)  # new features later: retraining is the schedule's
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=ready.cursor)
    assert all(after.get_num_requested(key) == 0 for key in FIRST_MODEL_CHAIN)
