"""Schedules of the monitoring domain: daily drift and monitoring passes, a weekly retrain floor.

All of them run from the start (the seed's continuous training); stop one in the Dagster UI's
Automation tab, which remembers it in the instance.
"""

import dagster as dg

from price_platform.datasets import DatasetSpec
from price_platform.defs.monitoring.jobs import DRIFT_JOB, MONITORING_JOB, RETRAIN_JOB
from price_platform.defs.monitoring.resources import Monitoring
from price_platform.defs.resources import Warehouse

#: Runs after the ingestion domain's ``daily_ingestion`` (03:00 UTC) has reloaded the latest month.
DAILY_DRIFT_CRON = "30 3 * * *"


def build_daily_drift(spec: DatasetSpec) -> dg.ScheduleDefinition:
    """Each night, the latest loaded partition's features rebuilt and its drift measured against the champion."""

    @dg.schedule(
        name="daily_drift",
        job_name=DRIFT_JOB,
        cron_schedule=DAILY_DRIFT_CRON,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def daily_drift(
        context: dg.ScheduleEvaluationContext, warehouse: Warehouse, monitoring: Monitoring
    ) -> dg.RunRequest | dg.SkipReason:
        """Measures drift of the newest loaded partition (one run per partition and day)."""
        if monitoring.champion() is None:
            return dg.SkipReason("no champion yet: nothing to measure drift against")
        with warehouse.connect() as connection, connection.cursor() as cursor:
            cursor.execute("select max(partition_key) from price_data.loads")
            latest = cursor.fetchone()[0]
        if latest is None:
            return dg.SkipReason("no sales loaded yet")
        day = context.scheduled_execution_time.date().isoformat()
        return dg.RunRequest(run_key=f"{latest}:{day}", partition_key=latest, tags={"price_platform/trigger": "daily"})

    return daily_drift


daily_monitoring = dg.ScheduleDefinition(
    name="daily_monitoring",
    job_name=MONITORING_JOB,
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Prediction-log partitions ahead, retention, and live error by week and version.",
)

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job_name=RETRAIN_JOB,
    cron_schedule="0 5 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    tags={"price_platform/trigger": "weekly"},
    description="The retraining floor: a challenger every Monday, drift or not (promoted only if better).",
)
