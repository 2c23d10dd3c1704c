"""Monitoring assets: the drift report of each partition, live and estimated performance, the log's partitions."""

from datetime import UTC, datetime

import dagster as dg

from price_platform.datasets import DatasetSpec
from price_platform.defs.monitoring.resources import Monitoring
from price_platform.defs.partitions import sales_partitions
from price_platform.defs.resources import Dataset, Warehouse

DRIFT_REPORT = dg.AssetKey(["drift_report"])
LIVE_PERFORMANCE = dg.AssetKey(["live_performance"])
ESTIMATED_PERFORMANCE = dg.AssetKey(["estimated_performance"])
PREDICTION_LOG_PARTITIONS = dg.AssetKey(["prediction_log_partitions"])
#: Months of the prediction log ``estimated_performance`` estimates (the latest decides a retrain).
ESTIMATION_MONTHS = 12
#: The dbt features mart the drift report reads.
FEATURES = dg.AssetKey(["features"])
#: MLflow is a network service: retry a step that reads it, waiting 2, 4, 8 s between tries.
NETWORK_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def build_drift_report(spec: DatasetSpec) -> dg.AssetsDefinition:
    """The ``drift_report`` asset, partitioned as the sales are."""

    @dg.asset(
        key=DRIFT_REPORT,
        partitions_def=sales_partitions(spec),
        deps=[FEATURES],
        group_name="monitoring",
        kinds={"postgres", "python"},
        retry_policy=NETWORK_RETRY,
    )
    def drift_report(
        context: dg.AssetExecutionContext, warehouse: Warehouse, dataset: Dataset, monitoring: Monitoring
    ) -> dg.MaterializeResult:
        """How far this partition's sales moved from the champion's training data: per feature, target, predictions."""
        from price_platform.monitoring import reference_store, reports
        from price_platform.monitoring.multivariate import MIN_REFERENCE_ROWS, ReconstructionModel

        champion = monitoring.champion()
        version = None if champion is None else str(champion.version)
        window = reports.reference_window(dict(champion.tags) if champion else {}, context.partition_key)
        current = reports.read_features(warehouse.engine, dataset.spec, partition=context.partition_key)

        def summarise() -> tuple[reports.Reference, dict | None]:
            frame = reports.read_features(warehouse.engine, dataset.spec, window)
            if len(frame) < MIN_REFERENCE_ROWS:
                return reports.prepare(dataset.spec, frame), None
            return reports.prepare(dataset.spec, frame), reports.fit_multivariate(dataset.spec, frame).to_dict()

        with warehouse.connect() as connection:
            key = reports.window_reference_key(connection, dataset.spec, version, window)
            reference, stored_multivariate, built = reference_store.load_or_build(
                connection, key, summarise, model_version=version, window_label=window.label
            )
        if current.empty or reference.rows == 0:
            raise dg.Failure(
                description=f"partition {context.partition_key} has {len(current)} feature rows and the reference"
                f" {window} has {reference.rows}: nothing to compare",
                allow_retries=False,  # retries are for the network; data will not appear by waiting
            )
        with warehouse.connect() as connection:
            predictions = reports.read_predictions(connection, version)
        report = reports.measure(
            dataset.spec, reference, current, partition_key=context.partition_key, model_version=version,
            thresholds=monitoring.thresholds, predictions=predictions,
            multivariate=None if stored_multivariate is None else ReconstructionModel.from_dict(stored_multivariate),
        )
        with warehouse.connect() as connection:
            reports.save(connection, report, run_id=context.run_id)
        context.log.info(
            "%s vs champion %s: %d of %d features drifted, target drifted: %s, retrain: %s",
            context.partition_key, version, report.features_drifted, len(report.features), report.target_drifted,
            report.drift_detected,
        )
        return dg.MaterializeResult(
            metadata={
                "drift_detected": report.drift_detected,
                "champion_version": version or "none",
                "report_id": str(report.report_id),
                "drifted_share": dg.MetadataValue.float(report.drifted_share),
                "features_drifted": report.features_drifted,
                "target_psi": dg.MetadataValue.float(float(report.target["psi"])) if report.target else "not measured",
                "target_drifted": report.target_drifted,
                "prediction_drifted": report.prediction_drifted,
                "multivariate_error": dg.MetadataValue.float(report.multivariate["error"])
                if report.multivariate else "not measured",
                "multivariate_threshold": dg.MetadataValue.float(report.multivariate["threshold"])
                if report.multivariate else "not measured",
                "multivariate_drifted": report.multivariate_drifted,
                "reference_window": window.label,
                "reference_rows": report.reference_rows,
                "reference_statistics": f"{'computed and stored' if built else 'read from storage'} ({key})",
                "dagster/row_count": report.current_rows,
                "moved_most": dg.MetadataValue.md(report.markdown()),
                "plot": dg.MetadataValue.md(report.plot_markdown()),
            }
        )

    return drift_report


@dg.asset(key=PREDICTION_LOG_PARTITIONS, group_name="monitoring", kinds={"postgres"})
def prediction_log_partitions(warehouse: Warehouse, monitoring: Monitoring) -> dg.MaterializeResult:
    """Month partitions of ``monitoring.predictions`` made ahead of time, and old ones detached by retention."""
    from price_platform.monitoring import partitions

    today = datetime.now(UTC).date()
    with warehouse.connect() as connection:
        created = partitions.ensure_month_partitions(
            connection, today, partitions.month_start(today, monitoring.partitions_ahead)
        )
        detached = (
            partitions.detach_older_than(connection, monitoring.retention_months, today)
            if monitoring.retention_months else []
        )
        attached = partitions.attached_partitions(connection)
    listing = "\n".join(
        f"| {p.name} | {p.lower or 'DEFAULT'} | {p.upper or ''} |" for p in attached
    )
    return dg.MaterializeResult(
        metadata={
            "created": ", ".join(created) or "none",
            "detached": ", ".join(detached) or "none",
            "partitions": dg.MetadataValue.md("| partition | from | to |\n|---|---|---|\n" + listing),
        }
    )


@dg.asset(
    key=LIVE_PERFORMANCE,
    deps=[PREDICTION_LOG_PARTITIONS],
    group_name="monitoring",
    kinds={"postgres"},
    retry_policy=NETWORK_RETRY,
)
def live_performance(
    context: dg.AssetExecutionContext, warehouse: Warehouse, dataset: Dataset, monitoring: Monitoring
) -> dg.MaterializeResult:
    """Error of the served models by week and version, and their intervals' coverage per segment, from predictions
    joined with the prices they met."""
    from price_platform.monitoring import interval_health
    from price_platform.monitoring import live_performance as live
    from price_platform.monitoring.alerts import send_alert

    with warehouse.connect() as connection:
        matched = live.matched_predictions(connection, dataset.spec)
        errors = live.weekly_errors(matched)
        written = live.store(connection, errors)
        intervals = interval_health.measure(matched, dataset.spec)
        written += interval_health.store(connection, intervals, monitoring.interval_coverage, datetime.now(UTC).date())
        for version in live.versions_without_holdout(connection, sorted(errors["model_version"].unique())):
            mape = monitoring.holdout_mape(version)
            if mape is not None:
                live.record_holdout(connection, version, mape)
        drops = live.accuracy_drops(connection, errors, monitoring.accuracy_drop_threshold)
    for drop in drops:
        send_alert(
            "model accuracy dropped",
            {"model_version": drop.model_version, "week": drop.week, "live_accuracy": round(drop.live_accuracy, 4),
             "baseline_accuracy": round(drop.baseline_accuracy, 4), "baseline": drop.baseline,
             "drop": round(drop.drop, 4)},
            monitoring.alert_webhook_url,
        )
    wide = errors.pivot_table(index=["model_version", "week"], columns="metric", values="value").reset_index()
    context.log.info("%d predictions matched with actual prices, %d metric rows written", len(matched), written)
    return dg.MaterializeResult(
        metadata={
            "matched_predictions": len(matched),
            "by_feedback": int((matched["source"] == "feedback").sum()),
            "by_later_sale": int((matched["source"] == "sale").sum()),
            "metric_rows_written": written,
            "accuracy_drops": len(drops),
            "weekly_errors": dg.MetadataValue.md(wide.tail(20).to_markdown(index=False) if len(wide) else "none"),
            "interval_groups_below_nominal": interval_health.below_nominal(intervals, monitoring.interval_coverage),
            "interval_health": dg.MetadataValue.md(interval_health.markdown(intervals, monitoring.interval_coverage)),
        }
    )


@dg.asset(
    key=ESTIMATED_PERFORMANCE,
    deps=[PREDICTION_LOG_PARTITIONS],
    group_name="monitoring",
    kinds={"postgres", "python"},
    retry_policy=NETWORK_RETRY,
)
def estimated_performance(
    context: dg.AssetExecutionContext, warehouse: Warehouse, dataset: Dataset, monitoring: Monitoring
) -> dg.MaterializeResult:
    """The champion's RMSLE per month estimated from the prediction log alone, before prices arrive (DLE)."""
    from price_platform.monitoring import live_performance as live
    from price_platform.monitoring import performance_estimation as estimation
    from price_platform.monitoring import reports

    spec = dataset.spec
    champion = monitoring.champion()
    if champion is None:
        return dg.MaterializeResult(metadata={"champion_version": "none", "estimated_rmsle_rise_detected": False})
    version = str(champion.version)
    try:
        window = reports.holdout_window(dict(champion.tags), monitoring.holdout_months)
        reference = reports.read_features(warehouse.engine, spec, window)
        model = monitoring.champion_model(version, warehouse.dsn)
        estimator = estimation.LossEstimator.fit(
            spec, reference[spec.features], model.pipeline.predict(reference[spec.features]),
            reference[spec.target].to_numpy(float),
        )
    except ValueError as error:  # no holdout window, or too few priced rows in it (EstimationError)
        raise dg.Failure(description=f"champion {version}: {error}", allow_retries=False) from error
    with warehouse.connect() as connection:
        log = estimation.read_prediction_log(connection, spec, version, months=ESTIMATION_MONTHS)
        estimates = estimation.estimate_by_period(estimator, log)
        matched = live.matched_predictions(connection, spec)
        realized = estimation.realized_by_period(matched[matched["model_version"] == version])
        written = estimation.store(connection, version, estimates)
    latest = estimates.iloc[-1] if len(estimates) else None
    rise = None if latest is None else float(latest["estimated_rmsle"] / estimator.reference_rmsle - 1.0)
    detected = rise is not None and rise > monitoring.estimated_rmsle_rise_threshold
    context.log.info(
        "champion %s: %d logged predictions over %d months, latest estimated RMSLE %s (reference %.4f), retrain: %s",
        version, len(log), len(estimates), "-" if latest is None else f"{latest['estimated_rmsle']:.4f}",
        estimator.reference_rmsle, detected,
    )
    return dg.MaterializeResult(
        metadata={
            "champion_version": version,
            "reference_window": window.label,
            "reference_rows": estimator.reference_rows,
            "reference_rmsle": dg.MetadataValue.float(estimator.reference_rmsle),
            "latest_period": "none" if latest is None else str(latest["period"]),
            "estimated_rmsle": "no predictions" if latest is None else dg.MetadataValue.float(float(latest["estimated_rmsle"])),
            "estimated_rmsle_interval": "-" if latest is None else f"{latest['lower']:.4f} .. {latest['upper']:.4f}",
            "estimated_rmsle_rise": "-" if rise is None else dg.MetadataValue.float(rise),
            "estimated_rmsle_rise_detected": detected,
            "metric_rows_written": written,
            "dagster/row_count": len(log),
            "by_month": dg.MetadataValue.md(estimation.markdown(estimates, realized, estimator.reference_rmsle)),
            "plot": dg.MetadataValue.md(
                estimation.plot_markdown(estimates, realized, estimator.reference_rmsle,
                                         monitoring.estimated_rmsle_rise_threshold)
            ),
        }
    )
