"""Behaviour tests of a fitted price model, run before it may be promoted.

- A larger area (the data set's ``area_column``) never lowers the price, all else equal.
- A column the model does not take (an extra field in the record) does not change the answer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from price_platform.datasets import DatasetSpec

AREA_STEPS = (1.0, 1.1, 1.25, 1.5)


def behaviour_failures(pipeline: Pipeline, spec: DatasetSpec, rows: pd.DataFrame, seed: int = 0) -> list[str]:
    """What the model does wrong on ``rows`` (empty when it behaves)."""
    failures = []
    inputs = rows[spec.features].reset_index(drop=True)
    if spec.area_column:
        prices = []
        for step in AREA_STEPS:
            larger = inputs.copy()
            larger[spec.area_column] = larger[spec.area_column] * step
            prices.append(pipeline.predict(larger))
        drops = np.diff(np.vstack(prices), axis=0) < -1e-6 * np.vstack(prices)[:-1]
        lowered = int(drops.any(axis=0).sum())
        if lowered:
            failures.append(f"a larger {spec.area_column} lowers the price of {lowered} of {len(inputs)} records")
    extra = inputs.assign(unused_column=np.random.default_rng(seed).normal(size=len(inputs)))
    if not np.allclose(pipeline.predict(extra), pipeline.predict(inputs), rtol=0, atol=1e-9):
        failures.append("an unused column changes the prediction")
    return failures
