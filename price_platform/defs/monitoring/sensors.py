"""Sensors of the continuous-training loop: drift after new sales, retrain after drift or an estimated loss rise,
alert on failure.

**One retrain per event.** A drift event is the champion drifting between two registry
decisions: its key is the champion version the drift was measured against and the id of the
latest row of ``model_registry.deployments`` (promotion, refusal or rollback). Every drift
signal until the retrain's outcome is recorded carries the same key, so fifty signals in a
row request one run (the sensor's cursor remembers the key, and Dagster drops a repeated
run key besides). After a promotion the champion changes; after a refusal a deployment row
is added: either way the next drift signal is a new event. An estimated-loss event (the
latest month's RMSLE estimated from the prediction log, ``estimated_performance``, past
``estimated_rmsle_rise_threshold``) is keyed the same way with its own prefix, so it requests
its own single retrain, and a drift event and a loss event of the same champion and
deployment one each.
"""


import json

import dagster as dg

from price_platform.defs.ingestion.assets import RAW_SALES
from price_platform.defs.monitoring.assets import DRIFT_REPORT, ESTIMATED_PERFORMANCE
from price_platform.defs.monitoring.jobs import RETRAIN_JOB
from price_platform.defs.monitoring.resources import Monitoring
from price_platform.defs.resources import Warehouse

#: Materialisation records read per sensor tick.
BATCH = 500


def drift_event_key(champion_version: str, last_deployment_id: int) -> str:
    """The run key of the retrain a drift event requests."""
    return f"drift:champion={champion_version}:after-deployment={last_deployment_id}"


def estimated_loss_event_key(champion_version: str, last_deployment_id: int) -> str:
    """The run key of the retrain an estimated-loss event requests."""
    return f"estimated-loss:champion={champion_version}:after-deployment={last_deployment_id}"


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
    """Requests one retrain per drift event and one per estimated-loss event (see the module docstring)."""
    state = {"after": None, "requested": None, "after_estimate": None, "requested_estimate": None}
    state |= json.loads(context.cursor) if context.cursor else {}
    requests, notes = [], []
    for asset_key, signal, position, requested, event_key, trigger in (
        (DRIFT_REPORT, "drift_detected", "after", "requested", drift_event_key, "drift"),
        (ESTIMATED_PERFORMANCE, "estimated_rmsle_rise_detected", "after_estimate", "requested_estimate",
         estimated_loss_event_key, "estimated_loss"),
    ):
        found = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, after_storage_id=state[position]), limit=BATCH, ascending=True
        )
        if not found.records:
            notes.append(f"no new {asset_key.to_user_string()} materialisations")
            continue
        state[position] = found.records[-1].storage_id
        signals = [record for record in found.records if _metadata(record, signal) is True]
        if not signals:
            notes.append(f"{len(found.records)} new {asset_key.to_user_string()} materialisations, none past threshold")
            continue
        latest = signals[-1]
        key = event_key(str(_metadata(latest, "champion_version")),
                        last_deployment_id(warehouse, monitoring.model_name))
        if key == state[requested]:
            notes.append(f"{len(signals)} {trigger} signals belong to event {key}, whose retrain is already requested")
            continue
        state[requested] = key
        partition = latest.partition_key or "-"
        context.log.info("%s signal (%d, latest %s): requesting retrain %s", trigger, len(signals), partition, key)
        tags = {"price_platform/trigger": trigger, f"price_platform/{trigger}_event": key}
        if trigger == "drift":
            tags["price_platform/drift_partition"] = partition
        requests.append(dg.RunRequest(run_key=key, tags=tags))
    return dg.SensorResult(
        run_requests=requests, cursor=json.dumps(state), skip_reason=None if requests else "; ".join(notes),
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
