"""Live health of the conformal intervals once prices come back: coverage and mean width, overall and per segment.

A served interval ``[lower_bound, upper_bound]`` was calibrated to hold the price with the
nominal coverage (``Settings.interval_coverage``). Over the last :data:`WINDOW_DAYS` days of
predictions whose prices are known (by feedback or a later sale), this measures per model
version, overall and per value of each segment column of the data set description, how
often the price fell inside and how wide the intervals were. A group of fewer than
:data:`MIN_ROWS` priced predictions is left out: its coverage says little. The rows are stored
in ``monitoring.model_metrics`` (``source='live'``, metrics :data:`METRICS`, ``segment``
``column=value`` or null overall), replacing the previous ones; the exporter publishes them
and Prometheus alerts when coverage falls more than 5 points below nominal.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import psycopg2.extensions
from psycopg2.extras import execute_values

from price_platform.datasets import DatasetSpec

#: Days of priced predictions measured, back from the newest one.
WINDOW_DAYS = 28
#: Fewest priced predictions a group needs to be reported.
MIN_ROWS = 20
#: Metrics written to ``monitoring.model_metrics``.
METRICS = ("interval_coverage", "interval_width", "interval_count", "interval_coverage_nominal")
#: Columns of :func:`measure`'s table.
COLUMNS = ["model_version", "segment", "rows", "coverage", "mean_width"]


def measure(matched: pd.DataFrame, spec: DatasetSpec, *, min_rows: int = MIN_ROWS) -> pd.DataFrame:
    """Coverage and mean width per model version, overall (``segment`` ``None``) and per segment value.

    ``matched`` is :func:`~price_platform.monitoring.live_performance.matched_predictions`'s table.
    """
    frame = matched.dropna(subset=["lower_bound", "upper_bound"])
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    created = pd.to_datetime(frame["created_at"], utc=True)
    frame = frame[created >= created.max() - pd.Timedelta(days=WINDOW_DAYS)]
    inside = (frame["actual"] >= frame["lower_bound"]) & (frame["actual"] <= frame["upper_bound"])
    base = pd.DataFrame({
        "model_version": frame["model_version"].to_numpy(),
        "inside": inside.to_numpy(dtype=float),
        "width": (frame["upper_bound"] - frame["lower_bound"]).to_numpy(dtype=float),
    })
    records = [json.loads(text) for text in frame["features"]] if spec.segments else []
    groups = [base.assign(segment=None)]
    for column in spec.segments:
        values = [record.get(column) for record in records]
        groups.append(base.assign(segment=[None if value is None else f"{column}={value}" for value in values])
                      .dropna(subset=["segment"]))
    rows = []
    for part in groups:
        for (version, segment), group in part.groupby(["model_version", part["segment"].fillna("")], sort=True):
            if len(group) >= min_rows:
                rows.append({"model_version": version, "segment": segment or None, "rows": len(group),
                             "coverage": float(group["inside"].mean()), "mean_width": float(group["width"].mean())})
    return pd.DataFrame(rows, columns=COLUMNS)


def store(
    connection: psycopg2.extensions.connection, health: pd.DataFrame, nominal: float, today: date
) -> int:
    """Replace the stored interval rows with ``health`` (and each version's nominal coverage); return rows written."""
    values = []
    for row in health.itertuples():
        for metric, value in (("interval_coverage", row.coverage), ("interval_width", row.mean_width),
                              ("interval_count", float(row.rows))):
            values.append((row.model_version, today, metric, float(value), row.segment, "live"))
    for version in sorted(health["model_version"].unique()) if len(health) else []:
        values.append((version, today, "interval_coverage_nominal", float(nominal), None, "live"))
    with connection.cursor() as cursor:
        cursor.execute("delete from monitoring.model_metrics where source = 'live' and metric = any(%s)",
                       (list(METRICS),))
        if values:
            execute_values(
                cursor,
                "insert into monitoring.model_metrics (model_version, period_start, metric, value, segment, source)"
                " values %s",
                values,
            )
    return len(values)


def markdown(health: pd.DataFrame, nominal: float) -> str:
    """The coverage table, groups below nominal minus 5 points marked."""
    if health.empty:
        return "no priced predictions with intervals yet"
    lines = [f"nominal coverage {nominal:.0%}", "", "| version | segment | priced | coverage | mean width |",
             "|---|---|---|---|---|"]
    for row in health.itertuples():
        mark = " **low**" if row.coverage < nominal - 0.05 else ""
        lines.append(f"| {row.model_version} | {row.segment or 'all'} | {row.rows} | {row.coverage:.1%}{mark}"
                     f" | {row.mean_width:,.0f} |")
    return "\n".join(lines)


def below_nominal(health: pd.DataFrame, nominal: float) -> int:
    """How many groups cover less than nominal minus 5 points."""
    return int(np.sum(health["coverage"] < nominal - 0.05)) if len(health) else 0
