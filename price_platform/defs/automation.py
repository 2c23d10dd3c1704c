"""What makes the first model by itself: the automation condition of the training chain, and the sensor that runs it.

A new data set's features follow its ingested partitions (the dbt assets are eager), and
its first candidate, evaluation and champion follow its first features (each training and
registry asset is materialized once when missing). Later models come from the weekly
retrain schedule and the drift and estimated-loss sensors, not from here: a full study on
every new partition would retrain far more often than the data changes.
"""

from __future__ import annotations

import dagster as dg

#: Materialize when missing, as soon as nothing upstream is missing or running; not again after
#: a failed attempt (a person looks at the failure and launches it), and not while the
#: launcher's first backfill is producing it. Dagster's ``on_missing()`` is no use here: it
#: only fires for partitions added after its first evaluation, never for an asset missing from the start.
FIRST_MODEL = (
    dg.AutomationCondition.missing()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.execution_failed()
).with_label("first_model")

#: Dagster makes a sensor of this name for assets with automation conditions, but stopped;
#: this one runs from the start.
SENSOR = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
