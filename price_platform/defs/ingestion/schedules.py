"""The ingestion job and its daily schedule."""

import dagster as dg

from price_platform.datasets import DatasetSpec
from price_platform.defs.ingestion.assets import RAW_SALES
from price_platform.defs.partitions import sales_partitions

#: Name of the job that materialises ``raw_sales`` and its checks for one partition.
INGEST_SALES = "ingest_sales"


def build_ingestion_job():  # -> dagster's unresolved asset job (no public type)
    """``raw_sales`` and its checks for one partition, in the run's own process.

    The two steps run one after the other anyway; a process per step would import Great
    Expectations twice more (seconds each), which dominated a partition's run time.
    """
    return dg.define_asset_job(
        INGEST_SALES, selection=dg.AssetSelection.assets(RAW_SALES), executor_def=dg.in_process_executor
    )


def build_daily_ingestion(spec: DatasetSpec) -> dg.ScheduleDefinition:
    """Each night, reload the latest month from the data set's source so that late sales of it land."""
    partitions = sales_partitions(spec)

    @dg.schedule(
        name="daily_ingestion",
        job_name=INGEST_SALES,
        cron_schedule="0 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def daily_ingestion(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        """Reloads the latest monthly partition of ``raw_sales`` from the data set's source."""
        keys = partitions.get_partition_keys(current_time=context.scheduled_execution_time)
        if not keys:
            return dg.SkipReason("no monthly partition has started yet")
        day = context.scheduled_execution_time.date().isoformat()
        return dg.RunRequest(run_key=f"{keys[-1]}:{day}", partition_key=keys[-1])

    return daily_ingestion
