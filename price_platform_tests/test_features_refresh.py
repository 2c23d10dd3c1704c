"""A changed data set description rebuilds the features table in full instead of failing dbt's schema check."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from test_features import USED_CARS_YAML, dbt_build, own_warehouse, read_sql, used_car_rows

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.defs.features import build_definitions
from price_platform.defs.features.project import description_hash
from price_platform.defs.features.refresh import stale_description
from price_platform.ingestion.loading import ingest_partition
from price_platform.settings import Settings

#: The used-cars description with a derived feature more and the fuel column left out.
CHANGED_YAML = USED_CARS_YAML.replace(
    "  fuel: {allowed: [diesel, petrol, electric]}\n", ""
).replace("derived:\n", "derived:\n  litres_per_year: engine_size / (2026 - year)\n")


def build_features(settings: Settings, spec: DatasetSpec, partition: str) -> dg.ExecuteInProcessResult:
    """The dbt assets of ``spec`` materialised by Dagster for one arrival batch."""
    definitions = build_definitions(settings, spec)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("arrival_batches", ["batch-1", "batch-2"])
    return dg.materialize(
        list(definitions.assets), partition_key=partition, instance=instance, resources=definitions.resources
    )


def test_a_yaml_change_rebuilds_every_partition_with_the_new_columns(settings: Settings, tmp_path: Path) -> None:
    spec_file = tmp_path / "used_cars.yaml"
    spec_file.write_text(USED_CARS_YAML)
    used_car_rows(1, 40).to_csv(tmp_path / "batch_1.csv", index=False)
    used_car_rows(2, 30).to_csv(tmp_path / "batch_2.csv", index=False)
    before = load_dataset(spec_file)
    with own_warehouse(settings, "refresh") as (own, warehouse):
        ingest_partition(warehouse.dsn, before, "batch-1")
        ingest_partition(warehouse.dsn, before, "batch-2", source_file=tmp_path / "batch_2.csv")
        assert stale_description(warehouse, before) is None  # no table yet: an ordinary first build
        for batch in ("batch-1", "batch-2"):
            assert build_features(own, before, batch).success
        assert stale_description(warehouse, before) is None
        first = read_sql(warehouse, "select * from price_data.features")
        assert "fuel" in first and "litres_per_year" not in first

        spec_file.write_text(CHANGED_YAML)
        after = load_dataset(spec_file)
        assert description_hash(after) != description_hash(before)
        reason = stale_description(warehouse, after)
        assert reason is not None and "description changed" in reason
        # The incremental build alone is what used to happen: dbt refuses the new columns.
        refused = dbt_build(warehouse, after, "batch-2", "batch-2")
        assert not refused.is_successful()
        result = build_features(own, after, "batch-2")
        assert result.success
        features = read_sql(warehouse, "select * from price_data.features order by arrival_seq")
        assert stale_description(warehouse, after) is None
    assert "fuel" not in features and "litres_per_year" in features
    assert features.groupby("partition_key").size().to_dict() == {"batch-1": 40, "batch-2": 30}  # both kept
    assert features.litres_per_year.notna().all()
    metadata = result.asset_materializations_for_node("price_features_dbt")
    refreshed = [m.metadata["full_refresh"].value for m in metadata if "full_refresh" in m.metadata]
    assert refreshed and "description changed" in refreshed[0]


def test_a_features_table_without_a_recorded_description_is_rebuilt(settings: Settings, tmp_path: Path) -> None:
    spec_file = tmp_path / "used_cars.yaml"
    spec_file.write_text(USED_CARS_YAML)
    used_car_rows(1, 20).to_csv(tmp_path / "batch_1.csv", index=False)
    spec = load_dataset(spec_file)
    with own_warehouse(settings, "refresh_legacy") as (_, warehouse):
        ingest_partition(warehouse.dsn, spec, "batch-1")
        assert dbt_build(warehouse, spec).is_successful()
        assert stale_description(warehouse, spec) is None
        with warehouse.connect() as connection, connection.cursor() as cursor:
            cursor.execute("comment on table price_data.features is null")
        reason = stale_description(warehouse, spec)
    assert reason is not None and "records no data set description" in reason

