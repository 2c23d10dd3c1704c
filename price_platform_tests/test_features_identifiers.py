"""Column names that are SQL reserved words (``table``, ``order``) go through ingestion, validation,
dbt and the training read: every identifier built from the data set's column names is quoted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_features import dbt_build, own_warehouse, read_sql

from price_platform.datasets import expression_sql, load_dataset
from price_platform.ingestion.loading import ingest_partition
from price_platform.settings import Settings
from price_platform.training.dataset import read_features, split

RESERVED_YAML = """\
name: furniture
target: price
id_column: select
numeric:
  table: {min: 0, max: 100}
  order: {min: 0, max: 10, integer: true}
categorical:
  group: {allowed: [oak, pine]}
segments: [group]
area_column: table
derived:
  table_per_order: table / (order + 1)
"""


def furniture_rows(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    table = rng.uniform(1, 100, n).round(2)
    return pd.DataFrame(
        {
            "select": [f"s{i}" for i in range(n)],
            "table": table,
            "order": rng.integers(0, 10, n),
            "group": rng.choice(["oak", "pine"], n),
            "price": ((50 * table + 100) * np.exp(rng.normal(0, 0.3, n))).round(2),
        }
    )


def test_expressions_become_sql_with_quoted_names() -> None:
    assert expression_sql("table / (order + 1)") == '("table" / ("order" + 1.0))'
    assert expression_sql("-a * 2") == '((-"a") * 2.0)'


def test_reserved_word_columns_go_from_file_to_training_rows(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "furniture.yaml").write_text(RESERVED_YAML + "source: {path: furniture.csv}\n")
    rows = furniture_rows(60)
    rows.to_csv(tmp_path / "furniture.csv", index=False)
    spec = load_dataset(tmp_path / "furniture.yaml")
    with own_warehouse(settings, "reserved") as (_, warehouse):
        summary = ingest_partition(warehouse.dsn, spec, "batch-1")
        assert (summary.rows_loaded, summary.rows_rejected) == (60, 0)
        invocation = dbt_build(warehouse, spec)
        assert invocation.is_successful(), invocation.get_error()
        features = read_sql(warehouse, "select * from price_data.features")
        frame = read_features(warehouse.engine, spec)
    assert {"table", "order", "group", "table_per_order", "prior_sales_by_group"} <= set(features.columns)
    expected = rows.set_index("select").sort_index()
    np.testing.assert_allclose(
        features.set_index("record_id").sort_index().table_per_order,
        expected.table / (expected.order + 1),
    )
    assert list(frame.columns) == [
        "record_id", "partition_key", "sale_month", "arrival_seq", "table", "order", "group", "price",
    ]
    assert len(frame) == 60
    windows = split(frame, spec, holdout_months=1, validation_months=1, seed=1)
    assert len(windows.train) + len(windows.validation) + len(windows.holdout) == 60


@pytest.mark.parametrize(
    ("expression", "message"),
    [("table +", "does not parse"), ("table ** 2", "'table ** 2' is not allowed"), ("abs(table)", "not allowed")],
)
def test_a_derived_expression_outside_the_grammar_is_refused_naming_it(
    tmp_path: Path, expression: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(RESERVED_YAML.replace("table / (order + 1)", expression))
    with pytest.raises(ValueError, match="derived feature 'table_per_order'") as raised:
        load_dataset(path)
    assert message in str(raised.value)
