"""Live error of the served models: logged predictions joined with the prices they turned out to be.

An actual price reaches a prediction in one of two ways: ``POST /feedback`` writes it to
``monitoring.actuals``, or the same record arrives later in a sales partition (its feature
values equal the logged request's, and ``price_data.features`` holds its price). Errors are
grouped by week of the prediction and model version and stored in ``monitoring.model_metrics``
(``source = 'live'``), replacing the weeks recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg2.extensions
from psycopg2.extras import execute_values

from price_platform.datasets import DatasetSpec

#: The dbt mart holding every sale with its price.
FEATURES_TABLE = "price_data.features"


@dataclass(frozen=True)
class AccuracyDrop:
    """A model version whose latest live week is less accurate than its baseline by more than allowed."""

    model_version: str
    week: str
    live_accuracy: float
    baseline_accuracy: float
    baseline: str

    @property
    def drop(self) -> float:
        return (self.baseline_accuracy - self.live_accuracy) / self.baseline_accuracy


#: Columns of :func:`matched_predictions`.
MATCHED_COLUMNS = [
    "model_version", "week", "prediction", "actual", "source", "created_at", "lower_bound", "upper_bound", "features",
]
#: Actual prices sent through ``POST /feedback``.
BY_FEEDBACK = "select prediction_id, actual, 'feedback' as source from monitoring.actuals"
#: Actual prices of later sales whose feature values equal a logged request's (feedback wins).
BY_SALE = """
    select distinct on (predictions.prediction_id) predictions.prediction_id, sales.actual, 'sale' as source
    from monitoring.predictions
    join (
        select (select jsonb_object_agg(key, value) from jsonb_each(to_jsonb(features))
                where key = any(%(columns)s)) as record,
               features.{target} as actual
        from {features} as features
        where features.{target} is not null
    ) as sales on predictions.features::jsonb = sales.record
    where not exists (select 1 from monitoring.actuals where actuals.prediction_id = predictions.prediction_id)
"""


def matched_predictions(connection: psycopg2.extensions.connection, spec: DatasetSpec) -> pd.DataFrame:
    """Every logged prediction with a known actual price (:data:`MATCHED_COLUMNS`; ``features`` as JSON text).

    Before the features mart is built, feedback is the only source.
    """
    with connection.cursor() as cursor:
        cursor.execute("select to_regclass(%s) is not null", (FEATURES_TABLE,))
        by_sale = BY_SALE.format(target=f'"{spec.target}"', features=FEATURES_TABLE)
        sources = [BY_FEEDBACK, by_sale] if cursor.fetchone()[0] else [BY_FEEDBACK]
        cursor.execute(
            f"with matched as ({' union all '.join(sources)})"
            " select predictions.model_version, date_trunc('week', predictions.created_at)::date as week,"
            " predictions.prediction, matched.actual, matched.source, predictions.created_at,"
            " predictions.lower_bound, predictions.upper_bound, predictions.features::text"
            " from matched join monitoring.predictions using (prediction_id)",
            {"columns": spec.features},
        )
        rows = cursor.fetchall()
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS)


def weekly_errors(matched: pd.DataFrame) -> pd.DataFrame:
    """Count, MAE, RMSE, MAPE and RMSLE by model version and week (long format: one row per metric)."""
    if matched.empty:
        return pd.DataFrame(columns=["model_version", "week", "metric", "value"])
    frame = matched.assign(
        error=matched["prediction"] - matched["actual"],
    )
    frame["abs_error"] = frame["error"].abs()
    frame["squared"] = frame["error"] ** 2
    frame["relative"] = frame["abs_error"] / frame["actual"].abs()
    frame["squared_log"] = (np.log(frame["actual"].clip(lower=1e-9)) - np.log(frame["prediction"].clip(lower=1e-9))) ** 2
    grouped = frame.groupby(["model_version", "week"])
    wide = pd.DataFrame(
        {
            "count": grouped.size().astype(float),
            "mae": grouped["abs_error"].mean(),
            "rmse": np.sqrt(grouped["squared"].mean()),
            "mape": grouped["relative"].mean(),
            "rmsle": np.sqrt(grouped["squared_log"].mean()),
        }
    ).reset_index()
    return wide.melt(id_vars=["model_version", "week"], var_name="metric", value_name="value")


def store(connection: psycopg2.extensions.connection, errors: pd.DataFrame) -> int:
    """Replace the live rows of the (version, week) pairs in ``errors``; return the rows written."""
    if errors.empty:
        return 0
    pairs = errors[["model_version", "week"]].drop_duplicates()
    with connection.cursor() as cursor:
        execute_values(
            cursor,
            "delete from monitoring.model_metrics using (values %s) as done(model_version, week)"
            " where model_metrics.source = 'live' and model_metrics.segment is null"
            " and model_metrics.model_version = done.model_version and model_metrics.period_start = done.week::date",
            list(pairs.itertuples(index=False, name=None)),
        )
        execute_values(
            cursor,
            "insert into monitoring.model_metrics (model_version, period_start, metric, value, source)"
            " values %s",
            [(row.model_version, row.week, row.metric, float(row.value), "live") for row in errors.itertuples()],
            template="(%s, %s, %s, %s, %s)",
        )
    return len(errors)


def versions_without_holdout(connection: psycopg2.extensions.connection, versions: list[str]) -> list[str]:
    """Which of ``versions`` have no holdout MAPE in ``monitoring.model_metrics`` yet."""
    with connection.cursor() as cursor:
        cursor.execute(
            "select distinct model_version from monitoring.model_metrics"
            " where source = 'holdout' and metric = 'mape' and segment is null and model_version = any(%s)",
            (versions,),
        )
        known = {row[0] for row in cursor.fetchall()}
    return [version for version in versions if version not in known]


def record_holdout(connection: psycopg2.extensions.connection, version: str, mape: float) -> None:
    """Store a version's holdout MAPE (from its training run) as the baseline of its live accuracy."""
    with connection.cursor() as cursor:
        cursor.execute(
            "insert into monitoring.model_metrics (model_version, metric, value, source) values (%s, 'mape', %s, 'holdout')",
            (version, mape),
        )


def accuracy_drops(
    connection: psycopg2.extensions.connection, errors: pd.DataFrame, threshold: float
) -> list[AccuracyDrop]:
    """Versions whose latest live week's accuracy (1 - MAPE) fell more than ``threshold`` below baseline.

    The baseline is the version's holdout accuracy when training stored it, else its first live week.
    """
    mape = errors[errors["metric"] == "mape"].sort_values("week")
    if mape.empty:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "select distinct on (model_version) model_version, value from monitoring.model_metrics"
            " where source = 'holdout' and metric = 'mape' and segment is null"
            " order by model_version, created_at desc"
        )
        holdout = dict(cursor.fetchall())
    drops = []
    for version, weeks in mape.groupby("model_version"):
        latest = weeks.iloc[-1]
        if version in holdout:
            baseline, label = 1.0 - holdout[version], "holdout"
        elif len(weeks) > 1:
            baseline, label = 1.0 - weeks.iloc[0]["value"], f"live week {weeks.iloc[0]['week']}"
        else:
            continue
        drop = AccuracyDrop(str(version), str(latest["week"]), 1.0 - latest["value"], baseline, label)
        if baseline > 0 and drop.drop > threshold:
            drops.append(drop)
    return drops


def stored_errors(connection: psycopg2.extensions.connection) -> pd.DataFrame:
    """The live rows of ``monitoring.model_metrics``, in the long format of :func:`weekly_errors`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "select model_version, period_start, metric, value from monitoring.model_metrics"
            " where source = 'live' and segment is null order by period_start"
        )
        rows = cursor.fetchall()
    return pd.DataFrame(rows, columns=["model_version", "week", "metric", "value"])
