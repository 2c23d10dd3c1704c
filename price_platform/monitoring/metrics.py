"""The pipeline's numbers as Prometheus metrics: an exporter reading PostgreSQL and MLflow on each scrape.

``price-platform exporter`` (:mod:`price_platform.commands.exporter`) serves ``/metrics`` (default port ``Settings.exporter_port``).
Each scrape reads the latest rows the pipeline wrote (drift summaries and reports, live and
holdout model metrics, the prediction log) and the registry's aliases, so what Prometheus
sees is what the pipeline stored, never a copy kept in a process. A source that does not
answer is reported by ``pipeline_source_up{source}`` = 0 instead of failing the scrape.

Request metrics (latency, predictions, cache hits) are the API's: ``serving/metrics.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import psycopg2
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Window of the business figures read from the prediction log.
BUSINESS_WINDOW = "24 hours"


class PipelineCollector(Collector):
    """Reads the pipeline's latest figures from the platform database and MLflow at each scrape."""

    def __init__(self, dsn: str, tracking_uri: str | None, model_name: str) -> None:
        self.dsn = dsn
        self.tracking_uri = tracking_uri
        self.model_name = model_name

    def collect(self) -> Iterator[GaugeMetricFamily]:
        source_up = GaugeMetricFamily("pipeline_source_up", "Whether the exporter could read a source.", labels=["source"])
        families: list[GaugeMetricFamily] = []
        try:
            families.extend(self._database_metrics())
            source_up.add_metric(["postgresql"], 1)
        except psycopg2.Error as error:
            log.warning("exporter cannot read PostgreSQL: %s", error)
            source_up.add_metric(["postgresql"], 0)
        if self.tracking_uri:
            try:
                families.extend(self._registry_metrics())
                source_up.add_metric(["mlflow"], 1)
            except Exception as error:  # noqa: BLE001 - any MLflow failure means "source down" on this scrape
                log.warning("exporter cannot read MLflow at %s: %s", self.tracking_uri, error)
                source_up.add_metric(["mlflow"], 0)
        yield source_up
        yield from families

    def _database_metrics(self) -> list[GaugeMetricFamily]:
        connection = psycopg2.connect(self.dsn, connect_timeout=3)
        try:
            connection.set_session(readonly=True, autocommit=True)
            with connection.cursor() as cursor:
                return [
                    *_drift_families(cursor),
                    *_accuracy_families(cursor),
                    *_estimate_and_interval_families(cursor),
                    *_business_families(cursor),
                    *_ingestion_families(cursor),
                ]
        finally:
            connection.close()

    def _registry_metrics(self) -> list[GaugeMetricFamily]:
        from price_platform.registry import tracking

        client = tracking.client(self.tracking_uri)
        versions = client.search_model_versions(f"name = '{self.model_name}'")
        info = GaugeMetricFamily(
            "model_version_info", "Registered model versions holding an alias (value 1).", labels=["version", "alias"]
        )
        trained = GaugeMetricFamily(
            "last_successful_training_timestamp_seconds", "When the newest model version was registered (Unix time)."
        )
        if versions:
            trained.add_metric([], max(version.creation_timestamp for version in versions) / 1000.0)
            for alias, version in client.get_registered_model(self.model_name).aliases.items():
                info.add_metric([str(version), alias], 1)
        return [info, trained]


def _drift_families(cursor: psycopg2.extensions.cursor) -> list[GaugeMetricFamily]:
    detected = GaugeMetricFamily("drift_detected", "1 when the latest drift report asks for retraining.")
    share = GaugeMetricFamily("drift_share", "Share of features that drifted in the latest drift report.")
    target = GaugeMetricFamily("target_drift_psi", "PSI of the target in the latest drift report.")
    feature = GaugeMetricFamily("drift_score", "PSI of each feature in the latest drift report.", labels=["feature", "kind"])
    reports = GaugeMetricFamily("drift_reports_total", "Drift reports stored, by verdict.", labels=["detected"])
    cursor.execute(
        "select report_id, drift_detected, drifted_share, target_psi from monitoring.drift_summaries"
        " order by created_at desc, partition_key desc limit 1"
    )
    latest = cursor.fetchone()
    if latest is not None:
        report_id, was_detected, drifted_share, target_psi = latest
        detected.add_metric([], float(was_detected))
        share.add_metric([], drifted_share)
        if target_psi is not None:
            target.add_metric([], target_psi)
        cursor.execute(
            "select feature, kind, psi from monitoring.drift_reports where report_id = %s and psi is not null",
            (report_id,),
        )
        for name, kind, psi in cursor.fetchall():
            feature.add_metric([name, kind], psi)
    cursor.execute("select drift_detected, count(*) from monitoring.drift_summaries group by 1")
    for was_detected, count in cursor.fetchall():
        reports.add_metric([str(was_detected).lower()], count)
    return [detected, share, target, feature, reports]


def _accuracy_families(cursor: psycopg2.extensions.cursor) -> list[GaugeMetricFamily]:
    accuracy = GaugeMetricFamily(
        "model_accuracy", "1 - MAPE of the latest live week of a model version.", labels=["model_version"]
    )
    holdout = GaugeMetricFamily(
        "model_holdout_accuracy", "1 - MAPE of a model version on its holdout.", labels=["model_version"]
    )
    live_error = GaugeMetricFamily(
        "model_live_error", "Latest live week's error of a model version.", labels=["model_version", "metric"]
    )
    cursor.execute(
        """
        select distinct on (model_version, source, metric) model_version, source, metric, value
        from monitoring.model_metrics
        where segment is null and metric in ('mape', 'mae', 'rmse', 'rmsle', 'count') and source in ('live', 'holdout')
        order by model_version, source, metric, period_start desc nulls last, created_at desc
        """
    )
    for version, source, metric, value in cursor.fetchall():
        if metric == "mape" and source == "live":
            accuracy.add_metric([version], 1.0 - value)
        elif metric == "mape" and source == "holdout":
            holdout.add_metric([version], 1.0 - value)
        if source == "live":
            live_error.add_metric([version, metric], value)
    return [accuracy, holdout, live_error]


def _estimate_and_interval_families(cursor: psycopg2.extensions.cursor) -> list[GaugeMetricFamily]:
    estimated = GaugeMetricFamily(
        "model_estimated_rmsle", "RMSLE of the latest month estimated before prices arrive (direct loss estimation).",
        labels=["model_version", "bound"],
    )
    coverage = GaugeMetricFamily(
        "interval_coverage", "Share of priced predictions inside their interval (last 28 days).",
        labels=["model_version", "segment"],
    )
    width = GaugeMetricFamily(
        "interval_width", "Mean width of the priced predictions' intervals (last 28 days).",
        labels=["model_version", "segment"],
    )
    nominal = GaugeMetricFamily("interval_coverage_nominal", "Coverage the intervals were calibrated for.",
                                labels=["model_version"])
    cursor.execute(
        """
        select distinct on (model_version, metric) model_version, metric, value from monitoring.model_metrics
        where source = 'estimated' and metric in ('rmsle', 'rmsle_lower', 'rmsle_upper')
        order by model_version, metric, period_start desc, created_at desc
        """
    )
    for version, metric, value in cursor.fetchall():
        estimated.add_metric([version, {"rmsle": "estimate", "rmsle_lower": "lower", "rmsle_upper": "upper"}[metric]],
                             value)
    cursor.execute(
        "select model_version, metric, segment, value from monitoring.model_metrics where source = 'live'"
        " and metric in ('interval_coverage', 'interval_width', 'interval_coverage_nominal')"
    )
    for version, metric, segment, value in cursor.fetchall():
        if metric == "interval_coverage_nominal":
            nominal.add_metric([version], value)
        else:
            (coverage if metric == "interval_coverage" else width).add_metric([version, segment or "all"], value)
    return [estimated, coverage, width, nominal]


def _business_families(cursor: psycopg2.extensions.cursor) -> list[GaugeMetricFamily]:
    logged = GaugeMetricFamily(
        "predictions_logged_24h", "Predictions in the log over the last 24 hours.", labels=["model_version"]
    )
    value = GaugeMetricFamily(
        "predicted_value_24h", "Sum of predicted prices over the last 24 hours.", labels=["model_version"]
    )
    coverage = GaugeMetricFamily(
        "feedback_coverage_ratio", "Share of the last 30 days' predictions with a known actual price."
    )
    cursor.execute(
        "select model_version, count(*), sum(prediction) from monitoring.predictions"
        f" where created_at > now() - interval '{BUSINESS_WINDOW}' group by 1"
    )
    for version, count, total in cursor.fetchall():
        logged.add_metric([version], count)
        value.add_metric([version], total)
    cursor.execute(
        "select count(*), count(actuals.prediction_id) from monitoring.predictions"
        " left join monitoring.actuals using (prediction_id)"
        " where predictions.created_at > now() - interval '30 days'"
    )
    total, with_actual = cursor.fetchone()
    coverage.add_metric([], with_actual / total if total else 0.0)
    return [logged, value, coverage]


def _ingestion_families(cursor: psycopg2.extensions.cursor) -> list[GaugeMetricFamily]:
    loaded = GaugeMetricFamily("sales_rows_loaded", "Sales rows stored by the latest load of each partition.")
    rejected = GaugeMetricFamily("sales_rows_rejected", "Sales rows set aside by the latest load of each partition.")
    last = GaugeMetricFamily("last_ingestion_timestamp_seconds", "When sales were last loaded (Unix time).")
    cursor.execute(
        """
        select coalesce(sum(rows_loaded), 0), coalesce(sum(rows_rejected), 0), max(loaded_at)
        from (select distinct on (partition_key) rows_loaded, rows_rejected, loaded_at
              from price_data.loads order by partition_key, loaded_at desc) as latest
        """
    )
    rows_loaded, rows_rejected, loaded_at = cursor.fetchone()
    loaded.add_metric([], rows_loaded)
    rejected.add_metric([], rows_rejected)
    if loaded_at is not None:
        last.add_metric([], loaded_at.timestamp())
    return [loaded, rejected, last]


def build_registry(dsn: str, tracking_uri: str | None, model_name: str) -> CollectorRegistry:
    """A registry holding the pipeline collector and this process's CPU and memory figures."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(dsn, tracking_uri, model_name))
    ProcessCollector(registry=registry)
    return registry


def serve(dsn: str, tracking_uri: str | None, model_name: str, host: str, port: int) -> WSGIServer:
    """Start the exporter's HTTP server in a daemon thread; ``shutdown()`` the result to stop it."""
    server, _thread = start_http_server(port, addr=host, registry=build_registry(dsn, tracking_uri, model_name))
    return server
