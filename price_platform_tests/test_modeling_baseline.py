"""The ridge baseline every candidate is compared with fits a table whose nullable numeric columns have gaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from price_platform.datasets import load_dataset, normalise_column
from price_platform.modeling import build_ridge_baseline
from price_platform_tests.test_ingestion_arrivals import CARS_YAML, generate_cars


def test_the_ridge_baseline_imputes_a_nullable_numeric_column(tmp_path: Path) -> None:
    (tmp_path / "used_cars.yaml").write_text(CARS_YAML)
    spec = load_dataset(tmp_path / "used_cars.yaml")
    cars = generate_cars(200, 1, seed=4).rename(columns=normalise_column)
    cars["make"] = cars["make"].str.strip()
    assert cars["engine_litres"].isna().any()  # electric cars have no engine size

    ridge = build_ridge_baseline(spec).fit(cars[spec.features], cars[spec.target])

    predicted = ridge.predict(cars[spec.features])
    assert np.isfinite(predicted).all()
    assert np.corrcoef(np.log(predicted), np.log(cars[spec.target]))[0, 1] > 0.5
