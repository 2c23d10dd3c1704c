"""Monitoring domain: drift reports, live performance, the retrain-on-drift loop, schedules and alerts."""

from __future__ import annotations

import dagster as dg

from price_platform.datasets import DatasetSpec
from price_platform.settings import Settings


def build_definitions(settings: Settings, spec: DatasetSpec) -> dg.Definitions:
    """Monitoring assets, checks, jobs, sensors and schedules for a data set."""
    from price_platform.defs.monitoring.assets import (
        build_drift_report,
        estimated_performance,
        live_performance,
        prediction_log_partitions,
    )
    from price_platform.defs.monitoring.checks import accuracy_holds
    from price_platform.defs.monitoring.jobs import build_drift_job, monitoring_job, retrain_job
    from price_platform.defs.monitoring.resources import Monitoring
    from price_platform.defs.monitoring.schedules import build_daily_drift, daily_monitoring, weekly_retrain
    from price_platform.defs.monitoring.sensors import (
        alert_on_run_failure,
        build_drift_on_new_sales,
        retrain_on_drift,
    )

    drift_job = build_drift_job()
    return dg.Definitions(
        assets=[build_drift_report(spec), prediction_log_partitions, live_performance, estimated_performance],
        asset_checks=[accuracy_holds],
        jobs=[drift_job, retrain_job, monitoring_job],
        sensors=[build_drift_on_new_sales(drift_job), retrain_on_drift, alert_on_run_failure],
        schedules=[build_daily_drift(spec), daily_monitoring, weekly_retrain],
        resources={"monitoring": Monitoring.from_settings(settings)},
    )
