"""Figures of a trained model for MLflow and Dagster: SHAP importance, residuals, predicted vs actual.

Figures are built as bare ``matplotlib.figure.Figure`` objects (rendered by Agg when saved),
so no pyplot state or display backend is involved.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb
from matplotlib.figure import Figure
from sklearn.pipeline import Pipeline


def shap_importance(pipeline: Pipeline, rows: pd.DataFrame) -> pd.Series:
    """Mean |SHAP value| per encoded input of the pipeline's XGBoost member (XGBoost's ``pred_contribs``)."""
    encoded = pipeline[:-1].transform(rows)
    member = pipeline.named_steps["model"].regressor_.named_estimators_["xgboost"]
    inputs = member.named_steps["columns"].transform(encoded)
    booster = member.named_steps["regressor"].get_booster()
    contributions = booster.predict(xgb.DMatrix(inputs), pred_contribs=True)[:, :-1]
    return pd.Series(np.abs(contributions).mean(axis=0), index=inputs.columns).sort_values(ascending=False)


def importance_figure(importance: pd.Series, top: int = 20) -> Figure:
    """Horizontal bars of the largest mean |SHAP| values."""
    shown = importance.head(top)[::-1]
    figure = Figure(figsize=(7, 0.3 * len(shown) + 1.2))
    axis = figure.subplots()
    axis.barh(shown.index, shown.to_numpy())
    axis.set_xlabel("mean |SHAP value| (log price)")
    axis.set_title("Feature importance (XGBoost member)")
    figure.tight_layout()
    return figure


def residual_figure(actual: np.ndarray, predicted: np.ndarray) -> Figure:
    """Log residuals against the actual price."""
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    axis.scatter(actual, np.log(actual) - np.log(predicted), s=6, alpha=0.5)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("actual price")
    axis.set_ylabel("log(actual) - log(predicted)")
    axis.set_title("Residuals against price (holdout)")
    figure.tight_layout()
    return figure


def predicted_actual_figure(actual: np.ndarray, predicted: np.ndarray) -> Figure:
    """Predicted against actual price, with the diagonal."""
    figure = Figure(figsize=(5, 5))
    axis = figure.subplots()
    axis.scatter(actual, predicted, s=6, alpha=0.5)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    axis.plot([low, high], [low, high], color="black", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("actual price")
    axis.set_ylabel("predicted price")
    axis.set_title("Predicted vs actual (holdout)")
    figure.tight_layout()
    return figure
