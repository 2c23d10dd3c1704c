"""Year-only times and outlier rules from the YAML: description, ingestion, dbt, the split and its method."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from test_features import dbt_build, own_warehouse, read_sql

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.defs.resources import Dataset
from price_platform.defs.training.assets import training_dataset
from price_platform.defs.training.resources import TrainingConfig
from price_platform.ingestion.loading import ingest_partition
from price_platform.ingestion.records import PARTITION_KEY, typed_records
from price_platform.ingestion.sources import read_source
from price_platform.settings import DEFAULT_DATASET, Settings
from price_platform.training.dataset import TrainingDataError, read_features, split, without_area_outliers

BOATS_YAML = """\
name: boats
source: {path: boats.csv}
target: price
id_column: hull
time: {year_column: year, start: 2019, end: 2020}
numeric:
  length: {min: 1, max: 40}
categorical:
  material: {allowed: [wood, steel]}
segments: [material]
outliers:
  - {column: length, above: 30, reason: racing yachts}
"""


def boat_rows(years: list[int], per_year: int) -> pd.DataFrame:
    rng = np.random.default_rng(9)
    n = len(years) * per_year
    length = rng.uniform(2, 35, n).round(1)
    return pd.DataFrame(
        {
            "Hull": [f"h{i}" for i in range(n)],
            "Year": np.repeat(years, per_year),
            "Length": length,
            "Material": rng.choice(["wood", "steel"], n),
            "Price": ((3_000 * length + 5_000) * np.exp(rng.normal(0, 0.3, n))).round(),
        }
    )


@pytest.fixture
def boats(tmp_path: Path) -> tuple[DatasetSpec, pd.DataFrame]:
    (tmp_path / "boats.yaml").write_text(BOATS_YAML)
    rows = boat_rows([2019, 2020], 30)
    rows.to_csv(tmp_path / "boats.csv", index=False)
    return load_dataset(tmp_path / "boats.yaml"), rows


def test_a_year_only_time_is_described_and_each_sale_lands_in_its_january(boats) -> None:
    spec, rows = boats
    assert spec.time is not None and spec.time.granularity == "year"
    assert (spec.time.start, spec.time.end, spec.time.columns) == ("2019-01", "2020-01", ["year"])
    records = typed_records(spec, read_source(spec))
    assert records[PARTITION_KEY].tolist() == [f"{year}-01-01" for year in rows.Year]


def features_frame(spec: DatasetSpec, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows shaped like ``read_features``' answer, without a database."""
    return pd.DataFrame(
        {
            "record_id": rows.Hull,
            "partition_key": [f"{y}-01-01" for y in rows.Year],
            "sale_month": pd.to_datetime([f"{y}-01-01" for y in rows.Year]),
            "arrival_seq": range(len(rows)),
            "year": rows.Year.astype(float),
            "length": rows.Length,
            "material": rows.Material,
            "price": rows.Price,
        }
    )


def test_two_years_split_at_random_within_each_year(boats) -> None:
    spec, rows = boats
    windows = split(features_frame(spec, rows), spec, holdout_months=12, validation_months=6, seed=3)
    assert windows.split_method == "random_within_years"
    for name in ("train", "validation", "holdout"):
        part = getattr(windows, name)
        assert set(part.year) == {2019.0, 2020.0}, name  # each year in each window
    assert len(windows.holdout) == 12 and len(windows.validation) == 8  # per year of 30: 6 (20%) and 4 (15%, rounded)
    again = split(features_frame(spec, rows), spec, holdout_months=12, validation_months=6, seed=3)
    assert again.holdout.record_id.tolist() == windows.holdout.record_id.tolist()


def test_three_years_or_more_split_by_year(boats) -> None:
    spec, _ = boats
    rows = boat_rows([2017, 2018, 2019, 2020], 10)
    windows = split(features_frame(spec, rows), spec, holdout_months=12, validation_months=6, seed=3)
    assert windows.split_method == "by_year"
    assert set(windows.holdout.year) == {2020.0} and set(windows.validation.year) == {2019.0}
    assert set(windows.train.year) == {2017.0, 2018.0}


def test_the_split_method_of_monthly_and_timeless_data(boats) -> None:
    spec, rows = boats
    frame = features_frame(spec, rows)
    assert split(frame, spec.model_copy(update={"time": None}), holdout_months=1, validation_months=1,
                 seed=1).split_method == "random"  # fmt: skip
    monthly = spec.time.model_copy(update={"month_column": "month"})
    frame["sale_month"] = pd.to_datetime([f"2020-{m:02d}-01" for m in np.arange(len(frame)) % 12 + 1])
    by_month = split(frame, spec.model_copy(update={"time": monthly}), holdout_months=2, validation_months=2, seed=1)
    assert by_month.split_method == "by_month"
    assert set(by_month.holdout.sale_month.dt.month) == {11, 12}


def test_outlier_rules_of_the_yaml_decide_the_rows_left_out_of_fitting(boats) -> None:
    spec, rows = boats
    frame = features_frame(spec, rows)
    kept = without_area_outliers(frame, spec)
    assert kept.record_id.tolist() == frame.record_id[frame.length <= 30].tolist() and len(kept) < len(frame)
    below = spec.model_copy(update={"outliers": [spec.outliers[0].model_copy(update={"above": None, "below": 5})]})
    assert without_area_outliers(frame, below).length.min() >= 5
    assert without_area_outliers(frame, spec.model_copy(update={"outliers": []})) is frame
    ames = load_dataset(DEFAULT_DATASET)
    assert [(rule.column, rule.above) for rule in ames.outliers] == [(ames.area_column, 4000.0)]


def test_a_year_only_table_goes_through_dbt_to_a_recorded_split(
    boats, settings: Settings, tmp_path: Path
) -> None:
    spec, rows = boats
    with own_warehouse(settings, "years") as (_, warehouse):
        for key in ("2019-01-01", "2020-01-01"):
            assert ingest_partition(warehouse.dsn, spec, key).rows_loaded == 30
        invocation = dbt_build(warehouse, spec)
        assert invocation.is_successful(), invocation.get_error()
        features = read_sql(warehouse, "select record_id, sale_month, prior_sales_by_material from price_data.features")
        months = pd.to_datetime(features.sale_month).dt.strftime("%Y-%m")
        assert sorted(months.unique()) == ["2019-01", "2020-01"]
        frame = read_features(warehouse.engine, spec)
        result = dg.materialize(
            [training_dataset],
            resources={
                "warehouse": warehouse,
                "dataset": Dataset(path=str(tmp_path / "boats.yaml")),
                "training": TrainingConfig(seed=3),
            },
        )
    assert len(frame) == 60
    metadata = result.asset_materializations_for_node("training_dataset")[0].metadata
    assert metadata["split_method"].value == "random_within_years"


def test_a_column_that_is_a_function_of_the_target_is_refused_as_a_leak(boats) -> None:
    spec, rows = boats
    frame = features_frame(spec, rows)
    leaky = spec.model_copy(update={"numeric": {**spec.numeric, "log_price": spec.numeric["length"]}})
    frame["log_price"] = np.log(frame.price)
    with pytest.raises(TrainingDataError, match=r"columns \['log_price'\] are a near-exact function of the target"):
        split(frame, leaky, holdout_months=12, validation_months=6, seed=3)
    assert split(frame, spec, holdout_months=12, validation_months=6, seed=3).split_method  # length alone is fine
