"""A backfill of many months in one run: each month still has its own materialization and checks."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from price_platform.datasets import bundled_sample, load_dataset
from price_platform.defs.ingestion.assets import RAW_SALES, build_raw_sales
from price_platform.defs.ingestion.checks import RECORDS_MEET_EXPECTATIONS, REJECTED_SHARE_WITHIN_LIMIT, build_checks
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.settings import DEFAULT_DATASET, Settings

SPEC = load_dataset(DEFAULT_DATASET)
RAW_SALES_ASSET = build_raw_sales(SPEC)
MONTHS = ["2007-01-01", "2007-02-01", "2007-03-01"]


@pytest.fixture(scope="module")
def resources(settings: Settings, postgres) -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": Warehouse(database_url=settings.database_url, database_name=settings.database_name),
        "dataset": Dataset(path=str(DEFAULT_DATASET)),
    }


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def test_the_asset_backfills_in_one_run() -> None:
    assert RAW_SALES_ASSET.backfill_policy == dg.BackfillPolicy.single_run()


def test_a_range_run_loads_every_month_with_its_own_figures(resources, settings: Settings) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [RAW_SALES_ASSET, *build_checks(SPEC, settings.max_rejected_share)],
        resources=resources,
        instance=instance,
        tags=range_tags(MONTHS[0], MONTHS[-1]),
    )
    assert result.success
    with resources["warehouse"].connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            "select _partition_key, count(*) from price_data.raw_sales where _partition_key = any(%s) group by 1",
            (MONTHS,),
        )
        stored = dict(cursor.fetchall())
    assert set(stored) == set(MONTHS)
    for key in MONTHS:
        expected = stored[key]
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_SALES, asset_partitions=[key]), limit=1
        ).records
        assert records[0].asset_materialization.metadata["dagster/row_count"].value == expected
    evaluations = result.get_asset_check_evaluations()
    for name in (RECORDS_MEET_EXPECTATIONS, REJECTED_SHARE_WITHIN_LIMIT):
        assert {e.partition for e in evaluations if e.check_name == name and e.partition} == set(MONTHS)
        (overall,) = [e for e in evaluations if e.check_name == name and e.partition is None]
        assert overall.passed and overall.metadata["partitions"].value == len(MONTHS)


def test_a_range_run_refuses_one_landed_file_for_many_months(resources, settings: Settings, tmp_path) -> None:
    path = tmp_path / "landed.csv"
    pd.read_csv(bundled_sample()).head(5).to_csv(path, index=False)
    result = dg.materialize(
        [RAW_SALES_ASSET],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        tags=range_tags(MONTHS[0], MONTHS[-1]),
        run_config={"ops": {"raw_sales": {"config": {"source_file": str(path)}}}},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "source_file loads one partition; this run covers 3" in str(failure.event_specific_data.error)


def test_one_validation_splits_into_each_partitions_own_outcome() -> None:
    from price_platform.ingestion.records import PARTITION_KEY, typed_records
    from price_platform.ingestion.sources import read_source
    from price_platform.validation.validate import validate_records

    records = typed_records(SPEC, read_source(SPEC), None)
    records = records[records[PARTITION_KEY].isin(MONTHS[:2])].reset_index(drop=True)
    second = records.index[records[PARTITION_KEY] == MONTHS[1]]
    records.loc[second[:2], SPEC.target] = -1.0  # two impossible prices in the second month only
    validation = validate_records(SPEC, records[SPEC.columns])
    assert not validation.success
    first = validation.restricted_to(records.index[records[PARTITION_KEY] == MONTHS[0]])
    assert first.success and not first.reasons
    broken = validation.restricted_to(second)
    assert not broken.success
    assert set(broken.reasons) == set(second[:2])
    assert sum(result["unexpected"] for result in broken.failed) >= 2
