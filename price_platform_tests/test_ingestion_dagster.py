"""``raw_sales`` and its blocking checks, run through Dagster on the system PostgreSQL (the landing sensor: test_landing_limits)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg2
import pytest

from price_platform.datasets import bundled_sample, load_dataset
from price_platform.defs.ingestion import build_definitions
from price_platform.defs.ingestion.assets import RAW_SALES, build_raw_sales
from price_platform.defs.ingestion.checks import build_checks
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.settings import DEFAULT_DATASET, Settings

SPEC = load_dataset(DEFAULT_DATASET)
RAW_SALES_ASSET = build_raw_sales(SPEC)


@pytest.fixture(scope="module")
def resources(settings: Settings, postgres) -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": Warehouse(database_url=settings.database_url, database_name=settings.database_name),
        "dataset": Dataset(path=str(DEFAULT_DATASET)),
    }


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return pd.read_csv(bundled_sample(), dtype=str, keep_default_na=False)


def month(sample: pd.DataFrame, year: int, mo: int, id_offset: int) -> pd.DataFrame:
    rows = sample[(sample["Year_Sold"] == str(year)) & (sample["Mo_Sold"] == str(mo))].copy()
    rows["sale_id"] = (rows["sale_id"].astype(int) + id_offset).astype(str)
    return rows.reset_index(drop=True)


def downstream_of_raw_sales() -> dg.AssetsDefinition:
    """A stand-in for the features that must not be built from a partition that failed its checks."""

    @dg.asset(deps=[RAW_SALES], partitions_def=RAW_SALES_ASSET.partitions_def)
    def features_stand_in() -> None:
        """Depends on raw_sales only so that the test sees whether it ran."""

    return features_stand_in


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}


def test_definitions_load_with_the_raw_sales_key(settings: Settings, resources) -> None:
    defs = dg.Definitions.merge(build_definitions(settings, SPEC), dg.Definitions(resources=resources))
    assert defs.resolve_assets_def(RAW_SALES).key == dg.AssetKey(["raw_sales"])
    assert defs.resolve_job_def("ingest_sales") is not None
    assert {c.name for d in defs.asset_checks for c in d.check_specs} == {
        "records_meet_expectations", "rejected_share_within_limit",
    }


def test_a_partition_materialises_with_green_checks(resources, settings: Settings) -> None:
    downstream = downstream_of_raw_sales()
    result = dg.materialize(
        [RAW_SALES_ASSET, *build_checks(SPEC, settings.max_rejected_share), downstream],
        partition_key="2007-06-01",
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    assert checks_of(result) == {"records_meet_expectations": True, "rejected_share_within_limit": True}
    (materialization,) = [m for m in result.get_asset_materialization_events() if m.asset_key == RAW_SALES]
    metadata = materialization.materialization.metadata
    sample = pd.read_csv(bundled_sample())
    expected = int(((sample["Year_Sold"] == 2007) & (sample["Mo_Sold"] == 6)).sum())
    assert metadata["dagster/row_count"].value == expected
    assert metadata["rows_rejected"].value == 0
    assert "sale_price" in metadata["preview"].value
    assert downstream.key in {m.asset_key for m in result.get_asset_materialization_events()}


def test_a_failing_blocking_check_stops_downstream(resources, settings: Settings, sample, tmp_path: Path) -> None:
    rows = month(sample, 2006, 5, 400_000)
    rows.loc[: len(rows) // 2, "Sale_Price"] = "-1"  # half the partition is bad
    path = tmp_path / "may.csv"
    rows.to_csv(path, index=False)
    downstream = downstream_of_raw_sales()
    result = dg.materialize(
        [RAW_SALES_ASSET, *build_checks(SPEC, settings.max_rejected_share), downstream],
        partition_key="2006-05-01",
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"raw_sales": {"config": {"source_file": str(path)}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert checks_of(result)["rejected_share_within_limit"] is False
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert RAW_SALES in materialized and downstream.key not in materialized


def test_the_daily_schedule_reloads_the_latest_month() -> None:
    from datetime import UTC, datetime

    from price_platform.defs.ingestion.schedules import build_daily_ingestion

    schedule = build_daily_ingestion(SPEC)
    request = schedule(dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 26, 3, tzinfo=UTC)))
    assert request.partition_key == RAW_SALES_ASSET.partitions_def.get_last_partition_key()
    assert request.partition_key == f"{SPEC.time.end}-01"


def test_a_bad_file_fails_the_run_with_its_message_and_writes_nothing(resources, sample, tmp_path: Path) -> None:
    rows = month(sample, 2008, 10, 600_000)
    rows.loc[6, "Gr_Liv_Area"] = "big"
    path = tmp_path / "october.csv"
    rows.to_csv(path, index=False)
    from price_platform.ingestion.loading import ingest_partition

    ingest_partition(resources["warehouse"].dsn, SPEC, "2008-10-01")  # rows the failed load must leave alone
    with psycopg2.connect(resources["warehouse"].dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select (select count(*) from price_data.raw_sales), (select count(*) from price_data.loads)")
        before = cursor.fetchone()
    result = dg.materialize(
        [RAW_SALES_ASSET],
        partition_key="2008-10-01",
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"raw_sales": {"config": {"source_file": str(path)}}}},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert f"{path}: column 'gr_liv_area': values that are not numbers: row 7: 'big'" == message
    with psycopg2.connect(resources["warehouse"].dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select (select count(*) from price_data.raw_sales), (select count(*) from price_data.loads)")
        assert cursor.fetchone() == before
