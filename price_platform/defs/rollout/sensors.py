"""The sensor of the sequential gate: a gate run whenever new feedback may have completed a pair."""

from __future__ import annotations

import dagster as dg

from price_platform.defs.resources import Warehouse
from price_platform.defs.rollout.assets import rollout_gate_job
from price_platform.defs.rollout.resources import Rollout
from price_platform.rollout import traffic


def feedback_mark(warehouse: Warehouse) -> str | None:
    """How much feedback has arrived: its count and the time of the latest (``None`` before the first price)."""
    with warehouse.connect() as connection, connection.cursor() as cursor:
        cursor.execute("select count(*), max(received_at) from monitoring.actuals")
        count, latest = cursor.fetchone()
    return f"{count}@{latest.isoformat()}" if count else None


@dg.sensor(job=rollout_gate_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def gate_on_feedback(context: dg.SensorEvaluationContext, rollout: Rollout, warehouse: Warehouse) -> dg.SensorResult:
    """Requests a ``rollout_gate`` run when feedback arrived since the last one and a challenger is out."""
    mark = feedback_mark(warehouse)
    if mark is None:
        return dg.SensorResult(skip_reason="no feedback yet")
    if mark == context.cursor:
        return dg.SensorResult(skip_reason="no new feedback", cursor=mark)
    challenger = traffic.current(rollout.tracking_uri, rollout.model_name).challenger
    if challenger is None:
        return dg.SensorResult(skip_reason="no challenger on live traffic", cursor=mark)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"gate:{challenger}:{mark}", tags={"price_platform/trigger": "feedback"})],
        cursor=mark,
    )
