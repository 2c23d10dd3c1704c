"""The dbt features: the table contract, no skew against the model's derived features, no look-ahead,
partition windows, another data set without time, and the dbt assets run by Dagster."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from conftest import drop_databases
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.defs.features import build_definitions
from price_platform.defs.features.project import build_vars, dataset_vars, dbt_executable, dbt_project
from price_platform.defs.features.resources import PlatformDbt
from price_platform.defs.resources import Warehouse
from price_platform.ingestion.loading import ingest_partition
from price_platform.ingestion.records import PARTITION_KEY, typed_records
from price_platform.ingestion.sources import read_source
from price_platform.ingestion.tables import PartitionLoad, ensure_raw_sales, replace_partition
from price_platform.modeling import DerivedFeatures
from price_platform.settings import DEFAULT_DATASET, Settings

AMES = load_dataset(DEFAULT_DATASET)
MONTH = "2008-06-01"
NEXT_MONTH = "2008-07-01"


@contextmanager
def own_warehouse(settings: Settings, suffix: str) -> Iterator[tuple[Settings, Warehouse]]:
    """Databases of their own (``raw_sales`` is shaped by one data set), migrated, dropped afterwards."""
    own = settings.model_copy(update={"database_name": f"{settings.database_name}_{suffix}"})
    warehouse = Warehouse.from_settings(own)
    try:
        assert warehouse.dsn  # starting the server creates and migrates the databases
        yield own, warehouse
    finally:
        warehouse.engine.dispose()
        drop_databases(warehouse.server)


def platform_dbt(warehouse: Warehouse) -> PlatformDbt:
    return PlatformDbt(project_dir=dbt_project(), dbt_executable=dbt_executable(), warehouse=warehouse)


def dbt_build(
    warehouse: Warehouse, spec: DatasetSpec, first: str | None = None, last: str | None = None, *args: str
) -> DbtCliInvocation:
    """``dbt build`` (or the command in ``args``) for a partition window; returns the finished invocation."""
    command = list(args) or ["build"]
    dbt_vars = json.dumps(build_vars(spec, first, last))
    return platform_dbt(warehouse).cli([*command, "--vars", dbt_vars], raise_on_error=False).wait()


def read_sql(warehouse: Warehouse, query: str) -> pd.DataFrame:
    with warehouse.engine.connect() as connection:
        return pd.read_sql_query(query, connection)


def load_sample_months(warehouse: Warehouse, spec: DatasetSpec) -> pd.DataFrame:
    """The sample's records typed by ingestion and written by its partition writer, one load per month.

    Validation is skipped (the sample is clean and GX is ingestion's to test): this keeps the
    fixture to seconds; the arrival-batch test below goes through the whole loader.
    """
    records = typed_records(spec, read_source(spec))
    with warehouse.connect() as connection, connection.cursor() as cursor:
        ensure_raw_sales(cursor, spec)
    with warehouse.connect() as connection, connection.cursor() as cursor:
        for partition_key, rows in records.groupby(PARTITION_KEY):
            load = PartitionLoad(
                load_id=uuid.uuid4(),
                partition_key=str(partition_key),
                source_kind="bundled",
                source_name=str(spec.source.path),
                accepted=rows,
                rejected=rows.iloc[0:0],
                reasons={},
            )
            replace_partition(cursor, spec, load)
    return records


@pytest.fixture(scope="module")
def ames(settings: Settings) -> Iterator[tuple[Settings, Warehouse]]:
    """The whole Ames sample in raw_sales and a full ``dbt build`` over it."""
    with own_warehouse(settings, "features") as (own, warehouse):
        load_sample_months(warehouse, AMES)
        invocation = dbt_build(warehouse, AMES)
        assert invocation.is_successful(), invocation.get_error()
        yield own, warehouse


@pytest.fixture(scope="module")
def ames_features(ames: tuple[Settings, Warehouse]) -> pd.DataFrame:
    return read_sql(ames[1], "select * from price_data.features order by arrival_seq")


def test_dataset_vars_follow_the_description(tmp_path: Path) -> None:
    assert dataset_vars(AMES)["other_columns"] == {"sale_id": "text"}
    assert dataset_vars(AMES)["time"] == {"column": None, "year_column": "year_sold", "month_column": "mo_sold"}
    spec_file = tmp_path / "dated.yaml"
    spec_file.write_text(
        "name: dated\ntarget: price\ntime: {column: sold_on, start: '2020-01'}\nnumeric: {rooms: {}}\n"
    )
    dated = dataset_vars(load_dataset(spec_file))
    assert dated["other_columns"] == {"sold_on": "text"}  # months come from ingestion's partition keys
    assert dated["segments"] == [] and dated["area_column"] is None


def test_features_follow_the_contract(ames: tuple[Settings, Warehouse], ames_features: pd.DataFrame) -> None:
    raw = read_sql(ames[1], "select count(*) as n, count(distinct _partition_key) as months from price_data.raw_sales")
    assert len(ames_features) == raw.n[0] == 2930
    assert ames_features.partition_key.nunique() == raw.months[0] == 55
    extras = [
        f"{prefix}{segment}"
        for segment in AMES.segments
        for prefix in ("prior_sales_by_", f"prior_mean_{AMES.target}_by_", "prior_price_per_area_by_")
    ]
    expected = ["record_id", "partition_key", "sale_month", "arrival_seq", *AMES.features, *AMES.derived, AMES.target]
    assert list(ames_features.columns) == [*expected, *extras]
    types = read_sql(
        ames[1],
        "select column_name, data_type from information_schema.columns"
        " where table_schema = 'price_data' and table_name = 'features'",
    ).set_index("column_name").data_type
    assert types[["record_id", "partition_key", "sale_month", "arrival_seq"]].tolist() == [
        "text", "text", "date", "bigint",
    ]
    assert (types[list(AMES.numeric)] == "double precision").all()
    assert (types[list(AMES.categorical)] == "text").all()
    months = pd.to_datetime(ames_features.sale_month).dt.strftime("%Y-%m-%d")
    assert (months == ames_features.partition_key).all()
    assert ames_features.record_id.is_unique


def test_derived_features_equal_the_models_own(ames: tuple[Settings, Warehouse], ames_features: pd.DataFrame) -> None:
    """No training/serving skew: dbt's derived columns equal DerivedFeatures on the same raw rows."""
    raw = read_sql(ames[1], "select * from price_data.raw_sales")
    derive = DerivedFeatures(dict(AMES.derived)).fit(raw[AMES.features])
    expected = derive.transform(raw[AMES.features]).set_index(raw[AMES.id_column])
    got = ames_features.set_index("record_id").loc[expected.index]
    for name in AMES.derived:
        np.testing.assert_allclose(got[name].to_numpy(float), expected[name].to_numpy(float), rtol=1e-12, err_msg=name)
    assert got["total_baths"].nunique() > 5  # the comparison is over real variation, not constants


def expected_prior_prices(raw: pd.DataFrame, segment: str) -> pd.DataFrame:
    """Sales, mean price and price per area of strictly earlier months per segment value, in pandas."""
    frame = raw.assign(
        month=raw._partition_key,
        priced=raw[AMES.target].where(raw[AMES.area_column] > 0),
        sized=raw[AMES.area_column].where(raw[AMES.area_column] > 0),
    )
    per_month = frame.groupby([segment, "month"]).agg(
        sales=(AMES.target, "size"), price=(AMES.target, "sum"), priced=("priced", "sum"), sized=("sized", "sum")
    )
    earlier = per_month.groupby(level=0).cumsum() - per_month
    earlier["mean_price"] = earlier.price / earlier.sales
    earlier["price_per_area"] = earlier.priced / earlier.sized
    return frame[[AMES.id_column, segment, "month"]].join(earlier, on=[segment, "month"]).set_index(AMES.id_column)


@pytest.mark.parametrize("segment", AMES.segments)
def test_prior_segment_prices_use_only_earlier_months(
    ames: tuple[Settings, Warehouse], ames_features: pd.DataFrame, segment: str
) -> None:
    raw = read_sql(ames[1], "select * from price_data.raw_sales")
    expected = expected_prior_prices(raw, segment)
    got = ames_features.set_index("record_id").loc[expected.index]
    assert (got[f"prior_sales_by_{segment}"].to_numpy() == expected.sales.to_numpy()).all()
    for column, name in [("mean_price", f"prior_mean_{AMES.target}_by_{segment}"),
                         ("price_per_area", f"prior_price_per_area_by_{segment}")]:
        np.testing.assert_allclose(got[name].to_numpy(float), expected[column].to_numpy(float), rtol=1e-9)
    first_month = got.partition_key == got.partition_key.min()
    assert (got.loc[first_month, f"prior_sales_by_{segment}"] == 0).all()
    assert got.loc[first_month, f"prior_price_per_area_by_{segment}"].isna().all()


def test_dagster_runs_the_dbt_assets_for_one_partition_with_checks(ames: tuple[Settings, Warehouse]) -> None:
    own, warehouse = ames
    definitions = build_definitions(own, AMES)
    (dbt_assets,) = definitions.assets
    assert dg.AssetKey("raw_sales") in dbt_assets.asset_deps[dg.AssetKey("stg_price_data__sales")]
    assert dbt_assets.automation_conditions_by_key[dg.AssetKey("features")] is not None
    with warehouse.connect() as connection, connection.cursor() as cursor:
        cursor.execute("delete from price_data.features where partition_key in ('2007-03-01', '2007-04-01')")
    result = dg.materialize(
        [dbt_assets],
        partition_key="2007-03-01",
        resources=definitions.resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    features = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("features")]
    assert [e.partition for e in features] == ["2007-03-01"]
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["unique_features_record_id"] and checks["assert_features_prior_sales_count_only_earlier_periods"]
    assert all(checks.values()) and len(checks) >= 15
    counts = read_sql(
        warehouse, "select partition_key, count(*) as n from price_data.features group by 1"
    ).set_index("partition_key").n
    raw = read_sql(warehouse, "select _partition_key, count(*) as n from price_data.raw_sales group by 1")
    assert counts["2007-03-01"] == raw.set_index("_partition_key").n["2007-03-01"]
    assert "2007-04-01" not in counts.index  # outside the window: left as it was
    metadata = features[0].materialization.metadata
    assert metadata["dagster/row_count"].value == len(read_sql(warehouse, "select 1 from price_data.features"))
    assert metadata["rows_in_window"].value == raw.set_index("_partition_key").n["2007-03-01"]


def test_rebuilding_a_month_ignores_that_month_and_later_prices(ames: tuple[Settings, Warehouse]) -> None:
    """Prices of the rebuilt month and later change tenfold: its prior prices do not move, the next month's do."""
    _, warehouse = ames
    columns = [f"prior_mean_{AMES.target}_by_{s}" for s in AMES.segments]
    columns += [f"prior_price_per_area_by_{s}" for s in AMES.segments]
    query = f"select record_id, partition_key, {AMES.target}, {', '.join(columns)} from price_data.features" \
        f" where partition_key in ('{MONTH}', '{NEXT_MONTH}') order by record_id"
    before = read_sql(warehouse, query)
    scale = f"update price_data.raw_sales set {AMES.target} = {AMES.target} {{}} 10 where _partition_key >= %s"
    with warehouse.connect() as connection, connection.cursor() as cursor:
        cursor.execute(scale.format("*"), (MONTH,))
    try:
        invocation = dbt_build(warehouse, AMES, MONTH, NEXT_MONTH, "build", "--select", "features")
        assert invocation.is_successful(), invocation.get_error()
        after = read_sql(warehouse, query)
    finally:  # raw prices back (exactly: x * 10 / 10 == x); later tests do not read these months' features
        with warehouse.connect() as connection, connection.cursor() as cursor:
            cursor.execute(scale.format("/"), (MONTH,))
    this_month = (before.partition_key == MONTH).to_numpy()
    np.testing.assert_allclose(after[AMES.target], before[AMES.target] * 10)  # the rebuild saw the new prices
    pd.testing.assert_frame_equal(after.loc[this_month, columns], before.loc[this_month, columns])
    moved = ~np.isclose(after.loc[~this_month, columns], before.loc[~this_month, columns])
    assert moved.mean() > 0.5  # the next month sees this month's prices


def test_the_prior_sales_recount_reports_a_wrong_and_a_missing_count(ames: tuple[Settings, Warehouse]) -> None:
    """Two stored counts broken by hand, one wrong and one null: the recount test returns exactly those two."""
    _, warehouse = ames
    count = f"prior_sales_by_{AMES.segments[0]}"
    recount = ("test", "--select", "assert_features_prior_sales_count_only_earlier_periods")
    rows = read_sql(warehouse, f"select record_id, {count} from price_data.features order by arrival_seq desc limit 2")
    (wrong, wrong_count), (missing, missing_count) = rows.itertuples(index=False)
    update = f"update price_data.features set {count} = %s where record_id = %s"
    with warehouse.connect() as connection, connection.cursor() as cursor:
        cursor.execute(update, (int(wrong_count) + 1, wrong))
        cursor.execute(update, (None, missing))
    try:
        broken = dbt_build(warehouse, AMES, None, None, *recount)
    finally:
        with warehouse.connect() as connection, connection.cursor() as cursor:
            cursor.execute(update, (int(wrong_count), wrong))
            cursor.execute(update, (int(missing_count), missing))
    assert not broken.is_successful()
    assert "Got 2 results, configured to fail if != 0" in str(broken.get_error())
    restored = dbt_build(warehouse, AMES, None, None, *recount)
    assert restored.is_successful(), restored.get_error()


def test_dbt_without_the_dataset_var_names_it_and_changes_nothing(ames: tuple[Settings, Warehouse]) -> None:
    _, warehouse = ames
    before = read_sql(warehouse, "select count(*) as n from price_data.features").n[0]
    invocation = platform_dbt(warehouse).cli(["build", "--select", "features"], raise_on_error=False).wait()
    assert not invocation.is_successful()
    assert "the `dataset` var is missing" in str(invocation.get_error())
    assert read_sql(warehouse, "select count(*) as n from price_data.features").n[0] == before


def test_a_failing_rebuild_leaves_the_partition_as_it_was(ames: tuple[Settings, Warehouse]) -> None:
    """A derived feature that divides by zero fails the window's rebuild; its old rows stay, none half-written."""
    _, warehouse = ames
    query = f"select record_id, total_area from price_data.features where partition_key = '{MONTH}' order by 1"
    before = read_sql(warehouse, query)
    dividing_by_zero = {**AMES.derived, "total_area": "gr_liv_area / (full_bath - full_bath)"}
    broken = AMES.model_copy(update={"derived": dividing_by_zero})
    invocation = dbt_build(warehouse, broken, MONTH, MONTH)  # the last test of this database: views stay broken
    assert not invocation.is_successful()
    assert "division by zero" in str(invocation.get_error())
    pd.testing.assert_frame_equal(read_sql(warehouse, query), before)


USED_CARS_YAML = """\
name: used_cars
description: A made-up used car market without sale dates or ids.
source:
  path: batch_1.csv
target: price
numeric:
  year: {min: 1980, max: 2030, integer: true}
  mileage: {min: 0, max: 1000000}
  engine_size: {min: 0.5, max: 8}
categorical:
  make: {allowed: [Audi, Fiat, Volvo]}
  fuel: {allowed: [diesel, petrol, electric]}
segments: [make]
derived:
  age: 2025 - year
  mileage_per_year: mileage / (2026 - year)
"""


def used_car_rows(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    year = rng.integers(2005, 2025, n)
    return pd.DataFrame(
        {
            "Make": rng.choice(["Audi", "Fiat", "Volvo"], n),
            "Year": year,
            "Mileage": rng.uniform(0, 200_000, n).round(1),
            "Engine Size": rng.choice([1.0, 1.6, 2.0, 3.0], n),
            "Fuel": rng.choice(["diesel", "petrol", "electric"], n),
            "Price": (30_000 - 1_000 * (2025 - year) + rng.normal(0, 500, n)).round(),
        }
    )


@pytest.fixture(scope="module")
def used_cars(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DatasetSpec, Settings, Warehouse]]:
    """A second data set, described only by YAML: other columns, no time, no id, two arrival batches."""
    folder = tmp_path_factory.mktemp("used_cars")
    (folder / "used_cars.yaml").write_text(USED_CARS_YAML)
    used_car_rows(1, 40).to_csv(folder / "batch_1.csv", index=False)
    used_car_rows(2, 30).to_csv(folder / "batch_2.csv", index=False)
    spec = load_dataset(folder / "used_cars.yaml")
    with own_warehouse(settings, "used_cars") as (own, warehouse):
        ingest_partition(warehouse.dsn, spec, "batch-1")
        ingest_partition(warehouse.dsn, spec, "batch-2", source_file=folder / "batch_2.csv")
        yield spec, own.model_copy(update={"dataset": folder / "used_cars.yaml"}), warehouse


def test_a_data_set_without_time_builds_through_the_same_project(
    used_cars: tuple[DatasetSpec, Settings, Warehouse],
) -> None:
    spec, _, warehouse = used_cars
    invocation = dbt_build(warehouse, spec)
    assert invocation.is_successful(), invocation.get_error()
    features = read_sql(warehouse, "select * from price_data.features order by arrival_seq")
    raw = read_sql(warehouse, "select * from price_data.raw_sales order by _ingested_at, _row_number")
    assert list(features.columns) == [
        "record_id", "partition_key", "sale_month", "arrival_seq", "year", "mileage", "engine_size", "make", "fuel",
        "age", "mileage_per_year", "price", "prior_sales_by_make", "prior_mean_price_by_make",
    ]
    assert len(features) == len(raw) == 70 and features.record_id.is_unique
    assert features.sale_month.isna().all()
    assert features.groupby("partition_key").size().to_dict() == {"batch-1": 40, "batch-2": 30}
    derived = DerivedFeatures(dict(spec.derived)).fit(raw[spec.features]).transform(raw[spec.features])
    for name in spec.derived:
        np.testing.assert_allclose(features[name], derived[name], rtol=1e-12)
    first, second = features[features.partition_key == "batch-1"], features[features.partition_key == "batch-2"]
    assert (first.prior_sales_by_make == 0).all() and first.prior_mean_price_by_make.isna().all()
    batch_1_means = first.groupby("make").price.mean()
    np.testing.assert_allclose(second.prior_mean_price_by_make, second.make.map(batch_1_means))
    assert (second.prior_sales_by_make == second.make.map(first.make.value_counts())).all()


def test_dagster_loads_and_builds_an_arrival_batch_through_ingestion_and_dbt(
    used_cars: tuple[DatasetSpec, Settings, Warehouse],
) -> None:
    """raw_sales (with its blocking GX checks) and the dbt assets in one run, for one arrival batch."""
    from price_platform.defs import ingestion
    from price_platform.defs.resources import Dataset

    spec, own, warehouse = used_cars
    definitions = dg.Definitions.merge(
        ingestion.build_definitions(own, spec),
        build_definitions(own, spec),
        dg.Definitions(resources={"warehouse": warehouse, "dataset": Dataset(path=str(own.dataset))}),
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("arrival_batches", ["batch-1", "batch-2"])
    batch_2 = str(own.dataset.parent / "batch_2.csv")
    result = dg.materialize(
        [*definitions.assets, *definitions.asset_checks],
        partition_key="batch-2",
        instance=instance,
        resources=definitions.resources,
        run_config={"ops": {"raw_sales": {"config": {"source_file": batch_2}}}},
    )
    assert result.success
    materialized = {e.asset_key.to_user_string(): e.partition for e in result.get_asset_materialization_events()}
    assert materialized["raw_sales"] == materialized["features"] == "batch-2"
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["records_meet_expectations"] and checks["unique_features_record_id"] and all(checks.values())
    features = read_sql(warehouse, "select * from price_data.features where partition_key = 'batch-2'")
    raw = read_sql(warehouse, "select * from price_data.raw_sales where _partition_key = 'batch-2'")
    assert len(features) == len(raw) == 30 and raw._load_id.nunique() == 1
    assert (features.prior_sales_by_make > 0).all()  # batch-1, loaded before, is its history


FLATS_YAML = """\
name: flats
description: Made-up flat sales with one date column written in several formats.
source:
  path: flats.csv
target: price
id_column: listing
time: {column: sold_on, start: '2024-01', end: '2024-02'}
numeric:
  rooms: {min: 1, max: 10, integer: true}
  floor_area: {min: 10, max: 500}
categorical:
  district: {allowed: [east, west]}
segments: [district]
area_column: floor_area
derived:
  area_per_room: floor_area / rooms
"""

FLATS_CSV = """\
Listing,Sold On,Rooms,Floor Area,District,Price
a1,2024-01-05,2,50,east,100000
a2,01/20/2024,3,80,east,180000
a3,2024-01-31T18:30:00,4,100,west,150000
b1,2024-02-03,2,40,east,90000
b2,Feb 14 2024,3,90,west,200000
"""


def test_a_data_set_with_a_date_column_gets_its_months_from_ingestion(
    settings: Settings, tmp_path: Path
) -> None:
    """Dates in mixed formats: sale months and prior prices follow the months ingestion parsed."""
    (tmp_path / "flats.yaml").write_text(FLATS_YAML)
    (tmp_path / "flats.csv").write_text(FLATS_CSV)
    spec = load_dataset(tmp_path / "flats.yaml")
    with own_warehouse(settings, "flats") as (_, warehouse):
        for month in ("2024-01-01", "2024-02-01"):
            ingest_partition(warehouse.dsn, spec, month)
        invocation = dbt_build(warehouse, spec)
        assert invocation.is_successful(), invocation.get_error()
        features = read_sql(warehouse, "select * from price_data.features").set_index("record_id").sort_index()
    months = pd.to_datetime(features.sale_month).dt.strftime("%Y-%m").to_dict()
    assert months == {"a1": "2024-01", "a2": "2024-01", "a3": "2024-01", "b1": "2024-02", "b2": "2024-02"}
    assert features.area_per_room.to_dict() == {"a1": 25.0, "a2": 80 / 3, "a3": 25.0, "b1": 20.0, "b2": 30.0}
    assert features.loc[["a1", "a2", "a3"], "prior_price_per_area_by_district"].isna().all()
    assert features.loc["b1", "prior_price_per_area_by_district"] == pytest.approx(280_000 / 130)  # a1 + a2
    assert features.loc["b2", "prior_price_per_area_by_district"] == pytest.approx(150_000 / 100)  # a3
