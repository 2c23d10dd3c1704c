"""The ``train_at_scale`` job: the model fitted partition by partition, registered, gated and promoted.

Runs on the real synthetic features of ``test_scale_training`` (bulk-loaded, built by dbt) in
a throwaway database, against the session's real MLflow server.
"""

from __future__ import annotations

import uuid

import dagster as dg
import numpy as np
import pytest
from test_scale_training import features, spec  # noqa: F401 (module fixtures: the synthetic features)

from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.defs.scale.assets import large_candidate_model, large_production_model
from price_platform.defs.scale.resources import ScaleTraining
from price_platform.defs.training.resources import TrainingConfig
from price_platform.registry import tracking
from price_platform.registry.champion import champion_version, load_version
from price_platform.settings import DEFAULT_DATASET
from price_platform.training.distributed import feature_partitions
from price_platform.training.large_candidate import windows

ROUNDS = 20


def _resources(features, system_postgres_url: str, mlflow_server: str, model_name: str, **training) -> dict:
    return {
        "warehouse": Warehouse(database_url=system_postgres_url, database_name=features.database_name),
        "dataset": Dataset(path=str(DEFAULT_DATASET)),
        "training": TrainingConfig(**training),
        "scale_training": ScaleTraining(rounds=ROUNDS),
        "registry": ModelRegistry(tracking_uri=mlflow_server, model_name=model_name),
    }


def _deployments(dsn: str, model_name: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select action, from_version, to_version from model_registry.deployments where model_name = %s order by id",
            (model_name,),
        )
        rows = cursor.fetchall()
    connection.close()
    return rows


def test_the_job_registers_promotes_and_then_refuses_a_model_that_is_not_better(
    features, spec, system_postgres_url, mlflow_server  # noqa: F811
) -> None:
    model_name = f"large-{uuid.uuid4().hex[:6]}"
    resources = _resources(features, system_postgres_url, mlflow_server, model_name)
    first = dg.materialize([large_candidate_model, large_production_model], resources=resources)
    assert first.success
    version = first.output_for_node("large_candidate_model").version
    assert champion_version(mlflow_server, model_name) == version

    client = tracking.client(mlflow_server)
    run = client.get_run(client.get_model_version(model_name, version).tags["run_id"])
    holdout_keys = windows(feature_partitions(features.dsn()), holdout_months=12, validation_months=6).holdout
    holdout_rows = sum(rows for key, rows in feature_partitions(features.dsn()) if key in holdout_keys)
    assert run.data.metrics["holdout_rows"] == holdout_rows
    assert 0 < run.data.metrics["holdout_rmsle"] < 0.5
    assert 0.7 <= run.data.metrics["interval_coverage"] <= 1.0
    assert run.data.params["engine"] == "chunked"
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/residuals_vs_price.png", "plots/predicted_vs_actual.png"}

    served = load_version(mlflow_server, model_name, version)
    example = served.input_example
    assert example is not None and np.all(np.isfinite(served.pipeline.predict(example)))
    assert _deployments(features.dsn(), model_name)[-1][1:] == (None, version)

    # The same data and seed give the same holdout RMSLE: not better, so the champion stays.
    second = dg.materialize(
        [large_candidate_model, large_production_model], resources=resources, raise_on_error=False
    )
    assert not second.success
    failure = next(e for e in second.all_events if e.is_step_failure)
    assert failure.step_key == "large_production_model"
    assert failure.event_specific_data.error.cause.cls_name == "PromotionRefused"
    assert "does not beat" in failure.event_specific_data.error.cause.message
    assert champion_version(mlflow_server, model_name) == version
    assert _deployments(features.dsn(), model_name)[-1][0] == "refuse"


def test_too_few_partitions_for_the_windows_is_refused_before_any_training(
    features, spec, system_postgres_url, mlflow_server  # noqa: F811
) -> None:
    model_name = f"large-{uuid.uuid4().hex[:6]}"
    partitions = len(feature_partitions(features.dsn()))
    resources = _resources(features, system_postgres_url, mlflow_server, model_name, holdout_months=partitions)
    with pytest.raises(ValueError, match=f"the features have {partitions} partitions"):
        dg.materialize([large_candidate_model], resources=resources)
    assert not tracking.client(mlflow_server).search_registered_models(f"name = '{model_name}'")

