"""The Great Expectations suite derived from a data set description, and the per-row reasons it gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.ingestion.records import ROW_NUMBER, typed_records
from price_platform.ingestion.sources import read_source
from price_platform.settings import DEFAULT_DATASET
from price_platform.validation.suite import build_suite
from price_platform.validation.validate import validate_records

SPEC = load_dataset(DEFAULT_DATASET)


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    """The whole bundled sample, typed as ingestion types it."""
    return typed_records(SPEC, read_source(SPEC))


def expectations(spec: DatasetSpec) -> dict[tuple[str, str | None], dict]:
    return {
        (e.configuration.type, e.configuration.kwargs.get("column")): dict(e.configuration.kwargs)
        for e in build_suite(spec).expectations
    }


def test_the_suite_follows_the_description() -> None:
    found = expectations(SPEC)
    assert set(found[("expect_table_columns_to_match_set", None)]["column_set"]) == set(SPEC.columns)
    assert found[("expect_column_values_to_be_in_type_list", "gr_liv_area")]["type_list"][0] == "float64"
    assert "object" in found[("expect_column_values_to_be_in_type_list", "neighborhood")]["type_list"]
    lot_area = SPEC.numeric["lot_area"]
    assert found[("expect_column_values_to_be_between", "lot_area")] | {} == {
        "column": "lot_area", "min_value": lot_area.min, "max_value": lot_area.max,
    }
    assert set(found[("expect_column_values_to_be_in_set", "street")]["value_set"]) == set(SPEC.categorical["street"].allowed)
    assert ("expect_column_values_to_not_be_null", "neighborhood") in found
    assert ("expect_column_values_to_not_be_null", "mas_vnr_type") not in found  # nullable in the YAML
    assert ("expect_column_values_to_not_be_null", "misc_feature") not in found
    assert ("expect_column_values_to_be_unique", "sale_id") in found
    target = found[("expect_column_values_to_be_between", "sale_price")]
    assert target["min_value"] == SPEC.target_min and target["strict_min"] is True


def test_allowed_categories_are_stripped() -> None:
    spec = SPEC.model_copy(deep=True)
    spec.categorical["sale_type"].allowed = ["WD ", " New"]
    assert set(expectations(spec)[("expect_column_values_to_be_in_set", "sale_type")]["value_set"]) == {"WD", "New"}


def test_the_bundled_sample_meets_its_suite(records: pd.DataFrame) -> None:
    validation = validate_records(SPEC, records[SPEC.columns], records[ROW_NUMBER])
    assert validation.success, validation.markdown()
    assert validation.reasons == {}
    assert records["mas_vnr_type"].isna().any() and records["misc_feature"].isna().any()


def test_each_broken_rule_gives_the_row_its_reason(records: pd.DataFrame) -> None:
    rows = records.head(10)[SPEC.columns].copy()
    rows.loc[0, "gr_liv_area"] = 20_000.0
    rows.loc[1, "neighborhood"] = "Atlantis"
    rows.loc[2, "neighborhood"] = None
    rows.loc[3, "sale_id"] = rows.loc[4, "sale_id"]
    rows.loc[5, "sale_price"] = 0.0
    rows.loc[6, "garage_cars"] = 1.5
    rows.loc[7, "mas_vnr_type"] = None  # nullable: fine
    rows.loc[8, "lot_area"] = np.nan
    validation = validate_records(SPEC, rows)
    assert not validation.success
    assert validation.reasons == {
        0: ["gr_liv_area: 20000.0 is outside [0.0, 16926.0]"],
        1: ["neighborhood: 'Atlantis' is not an allowed category"],
        2: ["neighborhood: missing"],
        4: [f"sale_id: duplicate id {rows.loc[4, 'sale_id']!r}"],
        5: ["sale_price: 0.0 is not greater than 0"],
        6: ["garage_cars: 1.5 is not a whole number"],
        8: ["lot_area: missing"],
    }
    failed = {(r["expectation"], r["column"]) for r in validation.failed}
    assert ("expect_column_values_to_be_unique", "sale_id") in failed


def test_reasons_are_keyed_by_the_given_row_ids(records: pd.DataFrame) -> None:
    rows = records.head(3)[SPEC.columns].copy()
    rows.loc[1, "street"] = "Cobblestone"
    validation = validate_records(SPEC, rows, row_ids=pd.Series([101, 102, 103]))
    assert validation.reasons == {102: ["street: 'Cobblestone' is not an allowed category"]}


def test_a_column_of_the_wrong_type_or_missing_fails_the_suite(records: pd.DataFrame) -> None:
    rows = records.head(5)[SPEC.columns].copy()
    rows["lot_area"] = rows["lot_area"].astype(str)
    rows = rows.drop(columns=["street"])
    validation = validate_records(SPEC, rows)
    failed = {(r["expectation"], r["column"]) for r in validation.failed}
    assert ("expect_column_values_to_be_in_type_list", "lot_area") in failed
    assert ("expect_table_columns_to_match_set", None) in failed
    assert "lot_area" in validation.markdown()
