"""Behaviour tests of a fitted price model, run before it may be promoted.

- A larger area (the data set's ``area_column``) never lowers the price, all else equal, in
  what is constrained to be monotone in it: for the blend by default its XGBoost member (the
  kernel ridge member is a polynomial of the area and cannot be constrained), with
  ``model.area_monotone: blend`` the whole blend (its kernel ridge then does not read the area),
  and any other model as a whole.
- A column the model does not take (an extra field in the record) does not change the answer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.ensemble import VotingRegressor
from sklearn.pipeline import Pipeline

from price_platform.datasets import DatasetSpec

AREA_STEPS = (1.0, 1.1, 1.25, 1.5)


def monotone_parts(pipeline: Pipeline, spec: DatasetSpec) -> dict[str, Callable[[pd.DataFrame], np.ndarray]]:
    """What must not price a larger area lower: name -> its output for input rows.

    The blend's members whose regressor carries XGBoost's ``monotone_constraints`` (each on the
    blend's encoding of the rows), unless the data set asks for the whole blend; otherwise the
    whole pipeline.
    """
    voting = getattr(pipeline.steps[-1][1], "regressor_", None) if isinstance(pipeline, Pipeline) else None
    if not isinstance(voting, VotingRegressor) or spec.model.area_monotone == "blend":
        return {"the model": pipeline.predict}
    encode = pipeline[:-1]
    parts = {}
    for name, member in zip([name for name, _ in voting.estimators], voting.estimators_, strict=True):
        regressor = member.steps[-1][1] if isinstance(member, Pipeline) else member
        if getattr(regressor, "monotone_constraints", None):
            parts[f"the blend's {name} member"] = lambda rows, member=member: member.predict(encode.transform(rows))
    return parts or {"the model": pipeline.predict}


def area_failure(spec: DatasetSpec, part: str, lowered: int, rows: int) -> str:
    """The message for a model that prices a larger area lower, with what the user can do about it."""
    area = spec.area_column
    if part == "the model" and spec.model.area_monotone == "blend":
        advice = (
            f"the blend's kernel ridge does not read {area} (model.area_monotone: blend), so the trees' constraint failed:"
            " check the XGBoost settings of the study; or set model.area_monotone: constrained_members in the data"
            " set YAML"
        )
    elif part == "the model":
        advice = (
            f"if a larger {area} must not lower the price, price with the blend (model.family: blend or xgboost), whose"
            f" XGBoost member is constrained monotone in it; if it may in this table, remove area_column from the data"
            " set YAML"
        )
    else:
        advice = (
            f"{part} is constrained monotone in {area} and still lowered it: check the rows (a derived feature that"
            f" falls as {area} grows?); if a larger {area} may lower the price in this table, remove area_column from"
            " the data set YAML"
        )
    return f"a larger {area} lowers the price of {lowered} of {rows} records in {part}; what you can do: {advice}"


def behaviour_failures(pipeline: Pipeline, spec: DatasetSpec, rows: pd.DataFrame, seed: int = 0) -> list[str]:
    """What the model does wrong on ``rows`` (empty when it behaves)."""
    failures = []
    inputs = rows[spec.features].reset_index(drop=True)
    if spec.area_column:
        for part, predict in monotone_parts(pipeline, spec).items():
            outputs = []
            for step in AREA_STEPS:
                larger = inputs.copy()
                larger[spec.area_column] = larger[spec.area_column] * step
                outputs.append(np.asarray(predict(larger), dtype=np.float64))
            stacked = np.vstack(outputs)
            drops = np.diff(stacked, axis=0) < -1e-6 * np.abs(stacked[:-1])
            lowered = int(drops.any(axis=0).sum())
            if lowered:
                failures.append(area_failure(spec, part, lowered, len(inputs)))
    extra = inputs.assign(unused_column=np.random.default_rng(seed).normal(size=len(inputs)))
    if not np.allclose(pipeline.predict(extra), pipeline.predict(inputs), rtol=0, atol=1e-9):
        failures.append("an unused column changes the prediction")
    return failures
