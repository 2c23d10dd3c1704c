"""Estimated RMSLE before the prices arrive: direct loss estimation (DLE) from the prediction log alone.

As in NannyML's DLE, a second model learns the champion's loss on a reference period whose
prices are known and which the champion did not train on (its holdout window): here the
absolute log error ``|log y - log ŷ|``, from the champion's inputs and its log prediction.
Applied to a period of the prediction log (inputs and predictions, no prices), the mean of
its squared estimates times a calibration factor is that period's estimated mean squared log
error, and its root the estimated RMSLE. The factor is what squaring the estimates leaves out
(an error's spread around its conditional mean: for normal errors ``E[e²] = π/2 · E[|e|]²``,
and the model's shrinkage), measured on the reference with out-of-fold estimates, so that the
estimate of the reference itself equals its realized RMSLE. It is a factor, not a term,
because that spread grows with the error: a constant added to every row overstates calm
periods. (NannyML models the squared log error itself instead.)

The interval is the estimate plus and minus three sampling errors of a period of that size
(NannyML's band): the spread of the reference's squared log errors over ``sqrt(rows)``,
carried to the root by the delta method. DLE sees what the inputs say: a market that prices
the same houses higher (a shift of the prices alone) leaves the inputs, and the estimate,
where they were; drift of the target is the drift report's to catch.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg2.extensions
from psycopg2.extras import execute_values
from sklearn.model_selection import KFold
from xgboost import XGBRegressor

from price_platform.datasets import DatasetSpec

#: Sampling errors on each side of an estimate (NannyML's band).
INTERVAL_SIGMAS = 3.0
#: Folds of the out-of-fold estimates that calibrate the squared estimates on the reference.
FOLDS = 5
#: Fewest reference rows with prices a loss model is fitted on.
MIN_REFERENCE_ROWS = 50
#: The loss model: few shallow boosted trees with large leaves (one thread), because a reference
#: period holds hundreds of priced sales and one error per sale is a noisy target. (Of five
#: settings tried on the drift benchmark's replay, deeper and longer ones estimated worse.)
LOSS_MODEL = {
    "n_estimators": 80, "learning_rate": 0.03, "max_depth": 2, "subsample": 0.8, "colsample_bytree": 0.8,
    "min_child_weight": 20, "tree_method": "hist", "n_jobs": 1, "random_state": 0,
}
#: Columns of the table :func:`estimate_by_period` returns.
ESTIMATE_COLUMNS = ["period", "rows", "estimated_rmsle", "lower", "upper"]
#: ``monitoring.model_metrics.source`` of the estimates.
SOURCE = "estimated"


class EstimationError(ValueError):
    """A reference or prediction log that a loss cannot be estimated from, with the reason."""


def loss_inputs(spec: DatasetSpec) -> list[str]:
    """The champion's inputs the loss model reads: every feature but those the log stores hashed (``pii``)."""
    return [name for name in spec.features if name not in set(spec.pii)]


@dataclass
class LossEstimator:
    """A fitted model of the champion's absolute log error, calibrated on its reference period."""

    spec: DatasetSpec
    model: XGBRegressor
    categories: dict[str, pd.Index]
    calibration: float
    squared_error_sd: float
    reference_rmsle: float
    reference_rows: int

    @classmethod
    def fit(cls, spec: DatasetSpec, features: pd.DataFrame, predicted: np.ndarray, actual: np.ndarray) -> LossEstimator:
        """Fit on the reference's inputs, the champion's predictions and the realized prices."""
        predicted, actual = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
        known = np.isfinite(actual) & (actual > 0) & np.isfinite(predicted) & (predicted > 0)
        if known.sum() < MIN_REFERENCE_ROWS:
            raise EstimationError(
                f"the reference has {int(known.sum())} rows with a price and a prediction; a loss model needs"
                f" {MIN_REFERENCE_ROWS}"
            )
        features = features.loc[known].reset_index(drop=True)
        predicted, actual = predicted[known], actual[known]
        categories = {name: pd.Index(features[name].dropna().astype(str).unique()) for name in spec.categorical
                      if name in loss_inputs(spec)}
        inputs = _inputs(spec, features, predicted, categories)
        error = np.abs(np.log(actual) - np.log(predicted))
        out_of_fold = np.empty_like(error)
        for train, test in KFold(FOLDS, shuffle=True, random_state=0).split(inputs):
            fold = XGBRegressor(**LOSS_MODEL, enable_categorical=True).fit(inputs.iloc[train], error[train])
            out_of_fold[test] = np.clip(fold.predict(inputs.iloc[test]), 0.0, None)
        model = XGBRegressor(**LOSS_MODEL, enable_categorical=True).fit(inputs, error)
        squared = error**2
        return cls(
            spec=spec, model=model, categories=categories,
            calibration=float(squared.mean() / max((out_of_fold**2).mean(), 1e-12)),
            squared_error_sd=float(squared.std(ddof=1)),
            reference_rmsle=float(np.sqrt(squared.mean())), reference_rows=int(known.sum()),
        )

    def absolute_log_errors(self, features: pd.DataFrame, predicted: np.ndarray) -> np.ndarray:
        """The estimated absolute log error of each prediction."""
        inputs = _inputs(self.spec, features, np.asarray(predicted, dtype=float), self.categories)
        return np.clip(self.model.predict(inputs), 0.0, None)

    def estimate(self, features: pd.DataFrame, predicted: np.ndarray) -> dict[str, float]:
        """Estimated RMSLE of a batch of predictions with its interval and row count."""
        rows = len(features)
        if rows == 0:
            raise EstimationError("no predictions to estimate a loss for")
        mean_squared = float((self.absolute_log_errors(features, predicted) ** 2).mean()) * self.calibration
        estimate = float(np.sqrt(mean_squared))
        spread = INTERVAL_SIGMAS * self.squared_error_sd / np.sqrt(rows) / (2 * max(estimate, 1e-9))
        return {"rows": rows, "estimated_rmsle": estimate, "lower": max(estimate - spread, 0.0),
                "upper": estimate + spread}


def estimate_by_period(estimator: LossEstimator, log: pd.DataFrame) -> pd.DataFrame:
    """One row per ``period`` of a prediction log (inputs, ``prediction``, ``period``): estimate and interval."""
    rows = [
        {"period": period, **estimator.estimate(group, group["prediction"].to_numpy(float))}
        for period, group in log.groupby("period", sort=True)
    ]
    return pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)


def read_prediction_log(
    connection: psycopg2.extensions.connection, spec: DatasetSpec, model_version: str, *, months: int,
    per_month: int = 20_000,
) -> pd.DataFrame:
    """The version's logged inputs and predictions of the last ``months`` months, ``period`` = month start.

    At most ``per_month`` predictions of a month are read (a random sample beyond that).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            select period, features, prediction from (
                select date_trunc('month', created_at)::date as period, features, prediction,
                       row_number() over (partition by date_trunc('month', created_at) order by random()) as draw
                from monitoring.predictions
                where model_version = %s
                  and created_at >= date_trunc('month', now()) - make_interval(months => %s)
            ) as logged where draw <= %s
            """,
            (model_version, months - 1, per_month),
        )
        found = cursor.fetchall()
    records = [record if isinstance(record, dict) else json.loads(record) for _, record, _ in found]
    frame = pd.DataFrame.from_records(records, columns=spec.features) if records else pd.DataFrame(columns=spec.features)
    frame["prediction"] = [row[2] for row in found]
    frame["period"] = [row[0] for row in found]
    return frame


def realized_by_period(matched: pd.DataFrame) -> pd.DataFrame:
    """Realized RMSLE per month of the predictions whose prices came back (``period``, ``rows``, ``rmsle``)."""
    if matched.empty:
        return pd.DataFrame(columns=["period", "rows", "rmsle"])
    frame = matched.assign(
        period=pd.to_datetime(matched["created_at"], utc=True).dt.tz_localize(None).dt.to_period("M").dt.start_time.dt.date,
        squared=(np.log(matched["actual"].astype(float)) - np.log(matched["prediction"].astype(float))) ** 2,
    )
    grouped = frame.groupby("period")["squared"]
    return pd.DataFrame({"rows": grouped.size(), "rmsle": np.sqrt(grouped.mean())}).reset_index()


def store(connection: psycopg2.extensions.connection, model_version: str, estimates: pd.DataFrame) -> int:
    """Replace the version's estimated rows of these months in ``monitoring.model_metrics``; return rows written."""
    if estimates.empty:
        return 0
    values = [
        (model_version, row.period, metric, float(getattr(row, column)), SOURCE)
        for row in estimates.itertuples()
        for metric, column in (("rmsle", "estimated_rmsle"), ("rmsle_lower", "lower"), ("rmsle_upper", "upper"),
                               ("count", "rows"))
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "delete from monitoring.model_metrics where source = %s and model_version = %s and period_start = any(%s)",
            (SOURCE, model_version, list(estimates["period"])),
        )
        execute_values(
            cursor,
            "insert into monitoring.model_metrics (model_version, period_start, metric, value, source) values %s",
            values,
        )
    return len(values)


def markdown(estimates: pd.DataFrame, realized: pd.DataFrame, reference_rmsle: float) -> str:
    """The estimates per month beside the realized RMSLE where prices came back."""
    joined = estimates.merge(realized.rename(columns={"rows": "priced"}), on="period", how="left")
    lines = [f"reference RMSLE {reference_rmsle:.4f}", "",
             "| month | predictions | estimated RMSLE | interval | realized RMSLE (priced) |", "|---|---|---|---|---|"]
    for row in joined.itertuples():
        realized_text = "-" if pd.isna(row.rmsle) else f"{row.rmsle:.4f} ({int(row.priced)})"
        lines.append(f"| {row.period} | {int(row.rows)} | {row.estimated_rmsle:.4f} | {row.lower:.4f} .. {row.upper:.4f}"
                     f" | {realized_text} |")
    return "\n".join(lines)


def plot_markdown(estimates: pd.DataFrame, realized: pd.DataFrame, reference_rmsle: float, threshold: float) -> str:
    """Estimated RMSLE per month with its interval, realized RMSLE and the retrain line, as an inline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.2))
    periods = pd.to_datetime(estimates["period"])
    axes.fill_between(periods, estimates["lower"], estimates["upper"], alpha=0.25, label="interval")
    axes.plot(periods, estimates["estimated_rmsle"], marker="o", label="estimated (DLE)")
    if not realized.empty:
        axes.plot(pd.to_datetime(realized["period"]), realized["rmsle"], marker="s", linestyle="--", label="realized")
    axes.axhline(reference_rmsle, color="grey", linewidth=1, label="reference")
    axes.axhline(reference_rmsle * (1 + threshold), color="#d62728", linestyle=":", linewidth=1, label="retrain above")
    axes.set_ylabel("RMSLE")
    axes.legend(loc="upper left", fontsize=7)
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return f"![estimated RMSLE](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


def _inputs(spec: DatasetSpec, features: pd.DataFrame, predicted: np.ndarray, categories: dict[str, pd.Index]) -> pd.DataFrame:
    """The loss model's inputs: numeric features as floats, categorical ones with the reference's categories,
    and the log prediction."""
    columns = {}
    for name in loss_inputs(spec):
        if name in categories:
            values = features[name].astype(object).where(features[name].notna(), None)
            columns[name] = pd.Categorical(values.map(lambda v: None if v is None else str(v)), categories=categories[name])
        else:
            columns[name] = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    columns["log_prediction"] = np.log(np.clip(predicted, 1e-9, None))
    return pd.DataFrame(columns)
