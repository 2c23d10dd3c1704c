"""A drift report of one partition: features, target and predictions against the champion's reference.

The reference is the champion's training window of ``price_data.features``: the partitions
from the version's ``train_start`` to its ``train_end`` tag (partition keys), or, for a
version without those tags, every partition before the one being checked. Its statistics
are computed once and stored (``reference_store``); a report then reads only the partition
being checked. The report is
stored as one ``monitoring.drift_reports`` row per feature (plus ``target`` and
``prediction`` rows) and one ``monitoring.drift_summaries`` row saying whether it retrains.
"""

from __future__ import annotations

import base64
import io
import uuid
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
import psycopg2.extensions
import sqlalchemy as sa
from psycopg2.extras import execute_values

from price_platform.datasets import DatasetSpec
from price_platform.monitoring.drift import NumericReference, Reference, compare, numeric_drift
from price_platform.monitoring.multivariate import ReconstructionModel
from price_platform.monitoring.partitions import month_start
from price_platform.monitoring.reference_store import reference_key

#: Significance level of the KS / chi-square tests that back a drift decision.
P_VALUE = 0.05
#: Fewest logged predictions on each side for a prediction-drift figure.
MIN_PREDICTIONS = 30


@dataclass(frozen=True)
class Thresholds:
    """When a column has drifted (PSI and p-value) and when a report asks for retraining (share)."""

    psi: float
    share: float
    p_value: float = P_VALUE


@dataclass(frozen=True)
class Window:
    """Partition keys of a reference window: ``start`` and ``end`` included, ``before`` excluded.

    ``None`` leaves that side open.
    """

    start: str | None = None
    end: str | None = None
    before: str | None = None

    @property
    def label(self) -> str:
        return f"{self.start or '...'} .. {self.end or self.before or '...'}"


@dataclass
class DriftReport:
    """The statistics of one partition against the reference, and the verdict."""

    partition_key: str
    model_version: str | None
    features: pd.DataFrame
    reference_rows: int
    current_rows: int
    target: dict | None = None
    prediction: dict | None = None
    multivariate: dict | None = None
    thresholds: Thresholds = field(default_factory=lambda: Thresholds(psi=0.2, share=0.3))
    report_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def features_drifted(self) -> int:
        return int(self.features["drifted"].sum())

    @property
    def drifted_share(self) -> float:
        return self.features_drifted / max(len(self.features), 1)

    @property
    def target_drifted(self) -> bool:
        return bool(self.target and self.target["drifted"])

    @property
    def prediction_drifted(self) -> bool:
        return bool(self.prediction and self.prediction["drifted"])

    @property
    def multivariate_drifted(self) -> bool:
        return bool(self.multivariate and self.multivariate["drifted"])

    @property
    def drift_detected(self) -> bool:
        """A retrain is due: enough features moved, or the prices, or the model's answers did."""
        return self.drifted_share >= self.thresholds.share or self.target_drifted or self.prediction_drifted

    def all_rows(self) -> pd.DataFrame:
        """Feature rows followed by the target and prediction rows, when measured."""
        extra = [row for row in (self.target, self.prediction) if row]
        if not extra:
            return self.features
        return pd.DataFrame([*self.features.to_dict("records"), *extra], columns=self.features.columns)

    def top(self, count: int = 10) -> pd.DataFrame:
        """The rows that moved most (by PSI), drifted ones first."""
        rows = self.all_rows()
        return rows.sort_values(["drifted", "psi"], ascending=[False, False], na_position="last").head(count)

    def markdown(self, count: int = 10) -> str:
        """A markdown table of the rows that moved most, after the multivariate line when measured."""
        lines = []
        if self.multivariate:
            found = self.multivariate
            lines += [f"multivariate (PCA reconstruction error, {found['components']} components): {found['error']:.4f}"
                      f" vs threshold {found['threshold']:.4f} (reference {found['reference_error']:.4f}):"
                      f" {'drifted' if found['drifted'] else 'no drift'}", ""]
        lines += ["| feature | kind | PSI | KS | JS | chi² p | drifted |", "|---|---|---|---|---|---|---|"]
        for row in self.top(count).itertuples():
            lines.append(
                f"| {row.feature} | {row.kind} | {_fmt(row.psi)} | {_fmt(row.ks)} | {_fmt(row.js)} "
                f"| {_fmt(row.chi2_p)} | {'yes' if row.drifted else 'no'} |"
            )
        return "\n".join(lines)

    def plot_png(self, count: int = 15) -> bytes:
        """A horizontal bar chart of the PSI of the rows that moved most, threshold marked."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        rows = self.top(count).iloc[::-1]
        figure, axes = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.2))
        colours = ["#d62728" if drifted else "#1f77b4" for drifted in rows["drifted"]]
        axes.barh(rows["feature"], rows["psi"].fillna(0.0), color=colours)
        axes.axvline(self.thresholds.psi, color="black", linestyle="--", linewidth=1, label="PSI threshold")
        axes.set_xlabel("population stability index")
        axes.set_title(f"drift of {self.partition_key} vs champion {self.model_version or '-'}")
        axes.legend(loc="lower right")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        plt.close(figure)
        return buffer.getvalue()

    def plot_markdown(self) -> str:
        """The plot as a markdown image with inline base64 data (what the Dagster UI renders)."""
        return f"![drift](data:image/png;base64,{base64.b64encode(self.plot_png()).decode()})"


def prepare(spec: DatasetSpec, reference: pd.DataFrame) -> Reference:
    """The statistics of a reference frame: every feature and the target."""
    return Reference.from_frame(reference, spec.numeric, spec.categorical, spec.target)


def fit_multivariate(spec: DatasetSpec, reference: pd.DataFrame) -> ReconstructionModel:
    """The PCA reconstruction model of a reference frame over every feature."""
    return ReconstructionModel.fit(reference, list(spec.numeric), list(spec.categorical))


def measure(
    spec: DatasetSpec,
    reference: Reference | pd.DataFrame,
    current: pd.DataFrame,
    *,
    partition_key: str,
    model_version: str | None,
    thresholds: Thresholds,
    predictions: tuple[np.ndarray, np.ndarray] | None = None,
    multivariate: ReconstructionModel | None = None,
) -> DriftReport:
    """Compare ``current`` with the reference (its statistics, or a frame to summarise) feature by feature,
    then the target and predictions, and all features together when ``multivariate`` is given."""
    prepared = reference if isinstance(reference, Reference) else prepare(spec, reference)
    features = compare(prepared, current, psi_threshold=thresholds.psi, p_value=thresholds.p_value)
    report = DriftReport(
        partition_key=partition_key,
        model_version=model_version,
        features=features,
        reference_rows=prepared.rows,
        current_rows=len(current),
        thresholds=thresholds,
        multivariate=None if multivariate is None else multivariate.measure(current),
    )
    if prepared.target is not None and spec.target in current and current[spec.target].notna().any():
        report.target = _numeric_row(
            spec.target, "target", prepared.target, current[spec.target].to_numpy(float), thresholds
        )
    if predictions is not None and min(len(predictions[0]), len(predictions[1])) >= MIN_PREDICTIONS:
        report.prediction = _numeric_row(
            "prediction", "prediction", NumericReference.from_values(np.asarray(predictions[0], dtype=float)),
            predictions[1], thresholds,
        )
    return report


def window_reference_key(
    connection: psycopg2.extensions.connection, spec: DatasetSpec, model_version: str | None, window: Window
) -> str:
    """The :func:`~price_platform.monitoring.reference_store.reference_key` of a window as loaded now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "select count(*), max(loaded_at) from price_data.loads where (%(start)s::text is null or partition_key >= %(start)s)"
            " and (%(end)s::text is null or partition_key <= %(end)s)"
            " and (%(before)s::text is null or partition_key < %(before)s)",
            {"start": window.start, "end": window.end, "before": window.before},
        )
        count, latest = cursor.fetchone()
    loads = f"{count}:{latest.isoformat() if latest else '-'}"
    return reference_key(model_version, window.label, loads, [*spec.numeric, *spec.categorical, spec.target])


def read_features(engine: sa.Engine, spec: DatasetSpec, window: Window | None = None, *, partition: str | None = None) -> pd.DataFrame:
    """Rows of ``price_data.features``: one partition, or the partitions of a window."""
    columns = ", ".join(f'"{name}"' for name in [*spec.features, spec.target])
    if partition is not None:
        query, params = f"select {columns} from price_data.features where partition_key = %(p)s", {"p": partition}
    else:
        window = window or Window()
        query = (
            f"select {columns} from price_data.features where (%(start)s::text is null or partition_key >= %(start)s)"
            " and (%(end)s::text is null or partition_key <= %(end)s)"
            " and (%(before)s::text is null or partition_key < %(before)s)"
        )
        params = {"start": window.start, "end": window.end, "before": window.before}
    return pd.read_sql_query(query, engine, params=params)


def reference_window(tags: dict[str, str], partition_key: str) -> Window:
    """The champion's training window from its version tags; every earlier partition without them."""
    if tags.get("train_end"):
        return Window(start=tags.get("train_start") or None, end=tags["train_end"])
    return Window(before=partition_key)


def holdout_window(tags: dict[str, str], holdout_months: int) -> Window:
    """The champion's holdout: the ``holdout_months`` months after its ``train_end`` tag (priced, not trained on)."""
    if not tags.get("train_end"):
        raise ValueError("the champion has no train_end tag: its holdout window is unknown")
    end = date.fromisoformat(tags["train_end"])
    return Window(start=month_start(end, 1).isoformat(), end=month_start(end, holdout_months).isoformat())


def read_predictions(
    connection: psycopg2.extensions.connection, model_version: str | None, limit: int = 50_000
) -> tuple[np.ndarray, np.ndarray] | None:
    """The champion's logged predictions: those since the last drift report, and those before it."""
    if model_version is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute("select max(created_at) from monitoring.drift_summaries")
        since = cursor.fetchone()[0]
        if since is None:
            return None
        query = (
            "select prediction from monitoring.predictions where model_version = %s and created_at {} %s"
            " order by created_at desc limit %s"
        )
        cursor.execute(query.format("<="), (model_version, since, limit))
        before = np.array([row[0] for row in cursor.fetchall()], dtype=float)
        cursor.execute(query.format(">"), (model_version, since, limit))
        after = np.array([row[0] for row in cursor.fetchall()], dtype=float)
    return before, after


def save(connection: psycopg2.extensions.connection, report: DriftReport, run_id: str | None = None) -> None:
    """Write the report's rows and its summary (in the caller's transaction)."""
    rows = report.all_rows()
    values = [
        (
            report.partition_key, report.model_version, row.feature, row.kind, _num(row.psi), _num(row.ks),
            _num(row.ks_p), _num(row.js), _num(row.chi2_p), int(row.reference_rows), int(row.current_rows),
            bool(row.drifted), str(report.report_id),
        )
        for row in rows.itertuples()
    ]
    with connection.cursor() as cursor:
        execute_values(
            cursor,
            "insert into monitoring.drift_reports (partition_key, model_version, feature, kind, psi, ks, ks_p, js,"
            " chi2_p, reference_rows, current_rows, drifted, report_id) values %s",
            values,
        )
        cursor.execute(
            "insert into monitoring.drift_summaries (report_id, partition_key, model_version, reference_rows,"
            " current_rows, features_checked, features_drifted, drifted_share, target_psi, target_drifted,"
            " prediction_psi, prediction_drifted, drift_detected, dagster_run_id, multivariate_error,"
            " multivariate_threshold, multivariate_drifted)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                str(report.report_id), report.partition_key, report.model_version, report.reference_rows,
                report.current_rows, len(report.features), report.features_drifted, report.drifted_share,
                _num(report.target["psi"]) if report.target else None, report.target_drifted,
                _num(report.prediction["psi"]) if report.prediction else None, report.prediction_drifted,
                report.drift_detected, run_id,
                _num(report.multivariate["error"]) if report.multivariate else None,
                _num(report.multivariate["threshold"]) if report.multivariate else None,
                report.multivariate_drifted if report.multivariate else None,
            ),
        )


def _numeric_row(
    name: str, kind: str, reference: NumericReference, current: np.ndarray, thresholds: Thresholds
) -> dict:
    found = numeric_drift(reference, np.asarray(current, dtype=float))
    drifted = found["psi"] is not None and found["psi"] >= thresholds.psi and found["ks_p"] < thresholds.p_value
    return {
        "feature": name, "kind": kind, **found, "js": None, "chi2_p": None,
        "reference_rows": reference.rows, "drifted": bool(drifted),
    }


def _num(value: object) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def _fmt(value: object) -> str:
    return "-" if _num(value) is None else f"{float(value):.3f}"
