"""Error measures of price predictions, per segment, and split-conformal intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import (
    mean_absolute_error,
    mean_absolute_percentage_error,
    r2_score,
    root_mean_squared_error,
)


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, MAPE, RMSLE and R² of prices."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    return {
        "rmse": float(root_mean_squared_error(actual, predicted)),
        "mae": float(mean_absolute_error(actual, predicted)),
        "mape": float(mean_absolute_percentage_error(actual, predicted)),
        "rmsle": float(np.sqrt(np.mean((np.log(actual) - np.log(predicted)) ** 2))),
        "r2": float(r2_score(actual, predicted)) if len(actual) > 1 else math.nan,
    }


def segment_metrics(frame: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray, segments: list[str]) -> pd.DataFrame:
    """One row per (segment column, value) with its row count and error measures, plus the overall row."""
    rows = [{"segment": "all", "value": "all", "rows": len(frame), **regression_metrics(actual, predicted)}]
    for column in segments:
        for value, index in frame.groupby(column, dropna=False).indices.items():
            rows.append(
                {"segment": column, "value": str(value), "rows": len(index), **regression_metrics(actual[index], predicted[index])}
            )
    return pd.DataFrame(rows)


def conformal_halfwidth(actual: np.ndarray, predicted: np.ndarray, coverage: float) -> float:
    """Split-conformal quantile of ``|log y - log ŷ|``: the interval is ``ŷ·exp(±q)``."""
    scores = np.abs(np.log(np.asarray(actual, dtype=float)) - np.log(np.asarray(predicted, dtype=float)))
    n = len(scores)
    level = min(1.0, math.ceil((n + 1) * coverage) / n)
    return float(np.quantile(scores, level, method="higher"))


def interval_coverage(actual: np.ndarray, predicted: np.ndarray, halfwidth: float) -> float:
    """Share of actual prices inside ``ŷ·exp(±halfwidth)``."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    inside = (actual >= predicted * math.exp(-halfwidth)) & (actual <= predicted * math.exp(halfwidth))
    return float(inside.mean())
