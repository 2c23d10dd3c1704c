"""Fitting the candidate model and its baselines, calibrating its interval and registering it.

The blend is fitted on the training window and its validation residuals calibrate the
split-conformal half-width; the registered model is then refitted on training + validation
(the half-width is kept: calibrated on a model that saw less data, it errs on the wide side;
the study's boosting rounds grow in proportion to the rows, :func:`scaled_rounds`) and
measured on the holdout, beside a median-price and a ridge baseline fitted on the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from price_platform.datasets import DatasetSpec
from price_platform.modeling import KERNEL_WEIGHT, build_blend_pipeline, build_ridge_baseline
from price_platform.registry.versions import (
    CandidateVersion,
    check_metrics,
    register_candidate,
)
from price_platform.training.behaviour import behaviour_failures
from price_platform.training.dataset import TrainingSplit, without_area_outliers
from price_platform.training.metrics import (
    conformal_halfwidth,
    interval_coverage,
    regression_metrics,
    segment_metrics,
)
from price_platform.training.plots import (
    importance_figure,
    predicted_actual_figure,
    residual_figure,
    shap_importance,
)

#: Holdout rows (a seeded sample) whose mean |SHAP value| ranks the features: enough for a stable ranking.
SHAP_ROWS = 200


class BehaviourError(RuntimeError):
    """The fitted model fails a behaviour test: it is not registered."""


@dataclass(frozen=True)
class TrainedCandidate:
    """A fitted pipeline with its interval half-width, metrics and evaluation tables."""

    pipeline: Pipeline
    interval_log_halfwidth: float
    metrics: dict[str, float]
    segments: pd.DataFrame
    importance: pd.Series
    params: dict[str, Any]


def scaled_rounds(xgboost_params: Mapping[str, Any], tuned_rows: int, fit_rows: int) -> dict[str, Any]:
    """``xgboost_params`` with the rounds tuned on ``tuned_rows`` rows scaled to a fit on ``fit_rows`` rows."""
    params = dict(xgboost_params)
    if "n_estimators" in params and tuned_rows > 0:
        params["n_estimators"] = max(1, round(int(params["n_estimators"]) * fit_rows / tuned_rows))
    return params


def fit_candidate(
    spec: DatasetSpec,
    data: TrainingSplit,
    xgboost_params: Mapping[str, Any],
    *,
    coverage: float,
    seed: int = 0,
    threads: int = 1,
    parallel_trees: int = 1,
    kernel_weight: float = KERNEL_WEIGHT,
) -> TrainedCandidate:
    """Fit, calibrate and measure the blend and its baselines; raise :class:`BehaviourError` if it misbehaves.

    ``parallel_trees`` trees are averaged per boosting round (XGBoost's ``num_parallel_tree``;
    the study boosts one); ``kernel_weight`` is the kernel ridge's share of the vote (the study's).
    """
    features, target = spec.features, spec.target
    xgboost_params = {"num_parallel_tree": parallel_trees, **xgboost_params}
    train = without_area_outliers(data.train, spec)
    calibration = build_blend_pipeline(spec, xgboost_params, threads=threads, seed=seed, kernel_weight=kernel_weight)
    calibration.fit(train[features], train[target])
    validation_predicted = calibration.predict(data.validation[features])
    halfwidth = conformal_halfwidth(data.validation[target].to_numpy(float), validation_predicted, coverage)

    fit_rows = without_area_outliers(data.fit_rows, spec)
    final_params = scaled_rounds(xgboost_params, len(train), len(fit_rows))
    pipeline = build_blend_pipeline(spec, final_params, threads=threads, seed=seed, kernel_weight=kernel_weight)
    pipeline.fit(fit_rows[features], fit_rows[target])
    actual = data.holdout[target].to_numpy(float)
    predicted = pipeline.predict(data.holdout[features])

    ridge = build_ridge_baseline(spec).fit(fit_rows[features], fit_rows[target])
    median = np.full(len(actual), float(fit_rows[target].median()))
    metrics = {
        **{f"holdout_{k}": v for k, v in regression_metrics(actual, predicted).items()},
        **{f"baseline_ridge_{k}": v for k, v in regression_metrics(actual, ridge.predict(data.holdout[features])).items()},
        **{f"baseline_median_{k}": v for k, v in regression_metrics(actual, median).items()},
        "validation_rmsle": regression_metrics(data.validation[target].to_numpy(float), validation_predicted)["rmsle"],
        "interval_coverage": interval_coverage(actual, predicted, halfwidth),
        "train_rows": float(len(fit_rows)),
        "holdout_rows": float(len(actual)),
    }
    check_metrics({k: v for k, v in metrics.items() if k != "holdout_r2" or len(actual) > 1})
    failures = behaviour_failures(pipeline, spec, data.holdout.head(200), seed=seed)
    if failures:
        raise BehaviourError("; ".join(failures))
    return TrainedCandidate(
        pipeline=pipeline,
        interval_log_halfwidth=halfwidth,
        metrics=metrics,
        segments=segment_metrics(data.holdout, actual, predicted, list(spec.segments)),
        importance=shap_importance(pipeline, data.holdout[features].sample(n=min(SHAP_ROWS, len(data.holdout)), random_state=seed)),
        params={
            **{f"xgboost_{k}": v for k, v in final_params.items()},
            "blend_kernel_weight": kernel_weight,
            "interval_coverage_nominal": coverage,
        },
    )


def register(
    trained: TrainedCandidate,
    spec: DatasetSpec,
    data: TrainingSplit,
    *,
    tracking_uri: str,
    model_name: str,
    dsn: str,
    dbt_manifest_hash: str,
    run_tags: Mapping[str, str] | None = None,
) -> CandidateVersion:
    """Log the trained candidate (params, metrics, plots, tables) and register it as ``challenger``."""
    actual = data.holdout[spec.target].to_numpy(float)
    predicted = trained.pipeline.predict(data.holdout[spec.features])
    figures = {
        "shap_importance": importance_figure(trained.importance),
        "residuals_vs_price": residual_figure(actual, predicted),
        "predicted_vs_actual": predicted_actual_figure(actual, predicted),
    }
    train_start, train_end = data.window("fit")
    return register_candidate(
        tracking_uri,
        model_name,
        trained.pipeline,
        data.fit_rows[spec.features],
        dsn=dsn,
        interval_log_halfwidth=trained.interval_log_halfwidth,
        data_version=data.data_version,
        dbt_manifest_hash=dbt_manifest_hash,
        metrics=trained.metrics,
        params=trained.params,
        tags=dict(run_tags or {}),
        version_tags={"train_start": train_start or "", "train_end": train_end or ""},
        figures=figures,
        tables={
            "segment_metrics": trained.segments,
            "shap_importance": trained.importance.rename_axis("feature").reset_index(name="mean_abs_shap"),
        },
    )
