"""Sensors of the continuous-training loop: drift after new sales, retrain after drift, alert on failure.
**One retrain per drift event.** A drift event is the champion drifting between two registry
decisions: its key is the champion version the drift was measured against and the id of the
latest row of ``model_registry.deployments`` (promotion, refusal or rollback). Every drift
signal until the retrain's outcome is recorded carries the same key, so fifty signals in a
row request one run (the sensor's cursor remembers the key, and Dagster drops a repeated
run key besides). After a promotion the champion changes; after a refusal a deployment row
is added: either way the next drift signal is a new event.
"""


import json

import dagster as dg

from price_platform.defs.ingestion.assets import RAW_SALES
from price_platform.defs.monitoring.assets import DRIFT_REPORT
from price_platform.defs.monitoring.jobs import RETRAIN_JOB
from price_platform.defs.monitoring.resources import Monitoring
from price_platform.resources import Warehouse

#: Materialisation records read per sensor tick.
BATCH = 500


def drift_event_key(champion_version: str, last_deployment_id: int) -> str:
    """The run key of the retrain a drift event requests."""
    return f"drift:champion={champion_version}:after-deployment={last_deployment_id}"


def last_deployment_id(warehouse: Warehouse, model_name: str) -> int:
    """Id of the latest promotion, refusal or rollback of the model (0 before the first)."""
    with warehouse.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            "select coalesce(max(id), 0) from model_registry.deployments where model_name = %s", (model_name,)
        )
        return int(cursor.fetchone()[0])


@dg.sensor(
    name="retrain_on_drift",
    job_name=RETRAIN_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def retrain_on_drift(
    context: dg.SensorEvaluationContext, warehouse: Warehouse, monitoring: Monitoring
) -> dg.SensorResult:
    """Requests one retrain per drift event (see the module docstring) when a drift report asks for it."""
    state = json.loads(context.cursor) if context.cursor else {"after": None, "requested": None}
    found = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DRIFT_REPORT, after_storage_id=state["after"]), limit=BATCH, ascending=True
    )
    if not found.records:
        return dg.SensorResult(skip_reason="no new drift reports", cursor=json.dumps(state))
    state["after"] = found.records[-1].storage_id
    signals = [
        record for record in found.records
        if _metadata(record, "drift_detected") is True
    ]
    if not signals:
        return dg.SensorResult(skip_reason=f"{len(found.records)} new drift reports, none past threshold",
                               cursor=json.dumps(state))
    latest = signals[-1]
    key = drift_event_key(str(_metadata(latest, "champion_version")), last_deployment_id(warehouse, monitoring.model_name))
    if key == state["requested"]:
        return dg.SensorResult(
            skip_reason=f"{len(signals)} drift signals belong to event {key}, whose retrain is already requested",
            cursor=json.dumps(state),
        )
    state["requested"] = key
    partition = latest.partition_key or "-"
    context.log.info("drift in %s (%d signals): requesting retrain %s", partition, len(signals), key)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=key,
                tags={
                    "price_platform/trigger": "drift",
                    "price_platform/drift_event": key,
                    "price_platform/drift_partition": partition,
                },
            )
        ],
        cursor=json.dumps(state),
    )


def build_drift_on_new_sales(drift_job) -> dg.SensorDefinition:  # drift_job: dagster's unresolved asset job
    """A sensor requesting features + ``drift_report`` for every partition of ``raw_sales`` that is (re)loaded."""

    @dg.sensor(
        name="drift_on_new_sales",
        job=drift_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def drift_on_new_sales(context: dg.SensorEvaluationContext, monitoring: Monitoring) -> dg.SensorResult:
        """Rebuilds the features of newly loaded sales and measures their drift against the champion.

        Before the first champion (the initial backfill) and inside the champion's training
        window there is nothing to measure: those loads are passed over.
        """
        after = int(context.cursor) if context.cursor else None
        found = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_SALES, after_storage_id=after), limit=BATCH, ascending=True
        )
        if not found.records:
            return dg.SensorResult(skip_reason="no new sales partitions", cursor=context.cursor)
        cursor = str(found.records[-1].storage_id)
        champion = monitoring.champion()
        if champion is None:
            return dg.SensorResult(skip_reason="no champion yet: nothing to measure drift against", cursor=cursor)
        trained_until = champion.tags.get("train_end")
        latest = {record.partition_key: record.storage_id for record in found.records if record.partition_key}
        requests = [
            dg.RunRequest(run_key=f"{key}:{storage_id}", partition_key=key, tags={"price_platform/trigger": "sales"})
            for key, storage_id in sorted(latest.items())
            if trained_until is None or key > trained_until
        ]
        return dg.SensorResult(
            run_requests=requests,
            cursor=cursor,
            skip_reason=None if requests else "the new sales are inside the champion's training window",
        )

    return drift_on_new_sales


@dg.run_failure_sensor(name="alert_on_run_failure", default_status=dg.DefaultSensorStatus.RUNNING)
def alert_on_run_failure(context: dg.RunFailureSensorContext, monitoring: Monitoring) -> None:
    """Alerts on every failed run: a log line, and a POST to ``alert_webhook_url`` when it is set."""
    from price_platform.monitoring.alerts import send_alert

    run = context.dagster_run
    send_alert(
        f"Dagster run of {run.job_name} failed",
        {
            "run_id": run.run_id,
            "job": run.job_name,
            "partition": run.tags.get("dagster/partition"),
            "error": context.failure_event.message,
        },
        monitoring.alert_webhook_url,
    )


def _metadata(record: dg.EventLogRecord, name: str) -> object:
    materialization = record.asset_materialization
    entry = materialization.metadata.get(name) if materialization else None
    return None if entry is None else entry.value
