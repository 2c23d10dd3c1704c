"""The candidate model at sizes one pandas frame cannot hold, fitted and measured partition by partition.

The large-data counterpart of :mod:`price_platform.training.candidate`: the windows are the
same (the last ``holdout_months`` feature partitions are the holdout, the
``validation_months`` before them the validation window), and so is the recipe -- fit on
the training window and calibrate the split-conformal interval on the validation window,
then refit on both and measure on the holdout -- but every step reads
``price_data.features`` one partition at a time (:mod:`price_platform.training.distributed`),
on Dask when the settings or the size call for it. What comes out is the platform's usual
fitted ``Pipeline``, so registry, promotion and serving treat it like any other version.
Only the holdout's predictions and labels (one float each per sale) are held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from price_platform.datasets import DatasetSpec
from price_platform.modeling import grows_with_area, numeric_inputs
from price_platform.registry.versions import check_metrics
from price_platform.settings import Settings
from price_platform.training.behaviour import behaviour_failures
from price_platform.training.candidate import BehaviourError
from price_platform.training.distributed import (
    DEFAULT_ROUNDS,
    FeatureEncoder,
    LargeTraining,
    feature_categories,
    feature_partitions,
    predict_partitions,
    read_partition,
    train_large,
)
from price_platform.training.metrics import conformal_halfwidth, interval_coverage, regression_metrics

#: Holdout rows the behaviour tests run on (the same number the in-memory candidate uses).
BEHAVIOUR_ROWS = 200
#: Holdout sales drawn (seeded) for the residual plots: enough to see the shape, few enough to draw.
PLOTTED_SALES = 20_000


@dataclass(frozen=True)
class Windows:
    """Feature partition keys of the training, validation and holdout windows, oldest first."""

    train: list[str]
    validation: list[str]
    holdout: list[str]
    rows: dict[str, int] = field(repr=False)  # every partition's rows, in key order

    @property
    def fit(self) -> list[str]:
        """Training and validation together: what the final model is fitted on."""
        return [*self.train, *self.validation]

    def count(self, keys: Sequence[str]) -> int:
        return sum(self.rows[key] for key in keys)

    def summary(self) -> pd.DataFrame:
        """Rows and partitions of each window, for metadata."""
        return pd.DataFrame(
            [
                {"window": name, "rows": self.count(keys), "first": keys[0], "last": keys[-1]}
                for name, keys in (("train", self.train), ("validation", self.validation), ("holdout", self.holdout))
            ]
        )


def windows(partitions: Sequence[tuple[str, int]], *, holdout_months: int, validation_months: int) -> Windows:
    """Split (partition key, rows) pairs in key order into the three time windows."""
    keys = [key for key, _ in partitions]
    if len(keys) < holdout_months + validation_months + 1:
        raise ValueError(
            f"the features have {len(keys)} partitions; a large training needs more than holdout ({holdout_months})"
            f" + validation ({validation_months}) months of them"
        )
    holdout_start = len(keys) - holdout_months
    validation_start = holdout_start - validation_months
    return Windows(keys[:validation_start], keys[validation_start:holdout_start], keys[holdout_start:], dict(partitions))


def monotone_in_area(spec: DatasetSpec) -> dict[str, str]:
    """XGBoost parameters keeping the price non-decreasing in the area column and features that grow with it."""
    if not spec.area_column:
        return {}
    growing = grows_with_area(spec)
    columns = [*numeric_inputs(spec), *spec.categorical]  # the encoded matrix's columns
    return {"monotone_constraints": "(" + ",".join("1" if column in growing else "0" for column in columns) + ")"}


def data_version(partitions: Sequence[tuple[str, int]], dbt_manifest_hash: str) -> str:
    """A short hash of the feature partitions used (key and row count) and of the dbt manifest."""
    text = ";".join(f"{key}:{rows}" for key, rows in partitions) + f"|{dbt_manifest_hash}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LargeCandidate:
    """The fitted model, its calibrated interval, holdout metrics and what the fits took."""

    pipeline: Pipeline
    interval_log_halfwidth: float
    metrics: dict[str, float]
    windows: Windows
    engine: str
    input_example: pd.DataFrame
    plotted: tuple[np.ndarray, np.ndarray] = field(repr=False)  # (actual, predicted) of a holdout sample


def _predictions(
    training: LargeTraining, dsn: str, spec: DatasetSpec, keys: Sequence[str], encoder: FeatureEncoder
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, actual) prices over the given partitions."""
    pairs = list(predict_partitions(training.booster, dsn, spec, keys, encoder))
    predicted = np.concatenate([p for p, _ in pairs]).astype("float64")
    actual = np.concatenate([a for _, a in pairs]).astype("float64")
    return np.exp(predicted), np.exp(actual)


def fit_large_candidate(
    settings: Settings,
    dsn: str,
    spec: DatasetSpec,
    *,
    holdout_months: int,
    validation_months: int,
    coverage: float,
    rounds: int = DEFAULT_ROUNDS,
    params: dict | None = None,
) -> LargeCandidate:
    """Fit, calibrate and measure the model on the feature partitions; raise if it misbehaves or a metric is NaN."""
    parts = windows(feature_partitions(dsn), holdout_months=holdout_months, validation_months=validation_months)
    params = {**monotone_in_area(spec), **(params or {})}
    encoder = FeatureEncoder(spec, feature_categories(dsn, spec))

    calibration = train_large(settings, dsn, spec, parts.train, params=params, rounds=rounds)
    validation_predicted, validation_actual = _predictions(calibration, dsn, spec, parts.validation, encoder)
    halfwidth = conformal_halfwidth(validation_actual, validation_predicted, coverage)

    final = train_large(settings, dsn, spec, parts.fit, params=params, rounds=rounds)
    predicted, actual = _predictions(final, dsn, spec, parts.holdout, encoder)
    metrics = {
        **{f"holdout_{k}": v for k, v in regression_metrics(actual, predicted).items()},
        "validation_rmsle": regression_metrics(validation_actual, validation_predicted)["rmsle"],
        "interval_coverage": interval_coverage(actual, predicted, halfwidth),
        "train_rows": float(parts.count(parts.fit)),
        "holdout_rows": float(len(actual)),
        "fit_seconds": calibration.seconds + final.seconds,
    }
    check_metrics(metrics)
    sample = read_partition(dsn, spec, parts.holdout[-1], limit=BEHAVIOUR_ROWS).to_pandas()
    failures = behaviour_failures(final.pipeline, spec, sample)
    if failures:
        raise BehaviourError("; ".join(failures))
    drawn = np.random.default_rng(0).permutation(len(actual))[:PLOTTED_SALES]
    return LargeCandidate(
        final.pipeline, halfwidth, metrics, parts, final.engine, sample[spec.features], (actual[drawn], predicted[drawn])
    )
