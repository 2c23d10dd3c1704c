"""NannyML's direct loss estimation on frames the drift bench wrote: the peer of ``estimated_rmsle_mae``.

Runs in a virtualenv of its own (NannyML 0.13 needs xgboost < 3, the project pins 3.2), so it
imports nothing of the project: ``python nannyml_dle.py FOLDER`` reads ``reference.parquet`` and
``analysis.parquet`` (features, ``y_pred``, ``y_true``, ``month`` as ``YYYY-MM``) and ``features.json`` from
FOLDER, fits ``nannyml.DLE`` (RMSLE, one chunk per month) on the reference, estimates the
analysis months from features and predictions alone, and writes ``estimates.json``:
``{"fit_seconds", "estimate_seconds", "months": {month: estimated RMSLE}}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nannyml
import pandas as pd


def main(folder: Path) -> None:
    features = json.loads((folder / "features.json").read_text())
    reference = _typed(pd.read_parquet(folder / "reference.parquet"))
    analysis = _typed(pd.read_parquet(folder / "analysis.parquet"))
    estimator = nannyml.DLE(
        feature_column_names=features,
        y_pred="y_pred",
        y_true="y_true",
        timestamp_column_name="month",
        metrics=["rmsle"],
        chunk_period="M",
        tune_hyperparameters=False,
    )
    started = time.perf_counter()
    estimator.fit(reference)
    fitted = time.perf_counter()
    found = estimator.estimate(analysis.drop(columns=["y_true"])).filter(period="analysis").to_df()
    estimated = time.perf_counter()
    months = {
        pd.Timestamp(start).strftime("%Y-%m"): float(value)
        for start, value in zip(found[("chunk", "start_date")], found[("rmsle", "value")], strict=True)
    }
    (folder / "estimates.json").write_text(json.dumps(
        {"fit_seconds": fitted - started, "estimate_seconds": estimated - fitted, "months": months}
    ))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as pandas categories (LightGBM, inside DLE, takes those), months as timestamps."""
    frame = frame.copy()
    for column in frame.columns:
        if column != "month" and not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype(object).astype("category")
    frame["month"] = pd.to_datetime(frame["month"])
    return frame


if __name__ == "__main__":
    main(Path(sys.argv[1]))
