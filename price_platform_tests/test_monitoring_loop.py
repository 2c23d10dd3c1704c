"""The whole continuous-training loop with the real training and registry assets.

A champion is trained on the sales up to 2009-12 by the training domain's assets. A month
of sales with moved prices and areas arrives; ``drift_report`` measures it against the
champion's training window, ``retrain_on_drift`` requests the ``retrain`` job, and that job
(the real one: training and registry groups) trains a challenger that must beat the champion
by the production margin; it does not, and the gate refuses it. The drift persisting after
the refusal is a new event: one more retrain is requested.
"""

from __future__ import annotations

import uuid

import dagster as dg
import pytest
from sqlalchemy.engine import make_url

from price_platform.datasets import load_dataset
from price_platform.defs.monitoring.assets import build_drift_report
from price_platform.defs.monitoring.jobs import RETRAIN_JOB, retrain_job
from price_platform.defs.monitoring.resources import Monitoring
from price_platform.defs.monitoring.sensors import retrain_on_drift
from price_platform.defs.registry.assets import production_model
from price_platform.defs.registry.checks import challenger_beats_champion
from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.defs.training.assets import candidate_model, hyperparameter_study, model_evaluation, training_dataset
from price_platform.defs.training.resources import TrainingConfig
from price_platform.postgres import PostgresServer
from price_platform.registry.champion import champion_version
from price_platform.registry.promotion import deployments
from price_platform.testing import sample_features, write_features
from price_platform_tests.conftest import drop_databases

SHIFTED = "2010-01-01"
AREAS = ["gr_liv_area", "first_flr_sf", "second_flr_sf", "total_bsmt_sf", "lot_area", "garage_area", "bsmt_unf_sf"]
TINY = {"n_trials": 2, "study_timeout_seconds": 120.0, "boosting_rounds": 80, "seed": 42}


@pytest.fixture(scope="module")
def warehouse(system_postgres_url, settings):
    name = f"pp_loop_{uuid.uuid4().hex[:8]}"
    server = PostgresServer(server_url=make_url(system_postgres_url), database_name=name)
    server.ensure_databases()
    warehouse = Warehouse(database_url=system_postgres_url, database_name=name, home=str(settings.home))
    yield warehouse
    warehouse.engine.dispose()
    drop_databases(server)


def test_drift_retrains_through_the_real_job_and_the_gate_refuses_a_challenger_that_is_not_better(
    warehouse, settings, mlflow_server
):
    spec = load_dataset(settings.dataset)
    features = sample_features(spec)
    write_features(warehouse.engine, features[features["partition_key"] < SHIFTED])
    model_name = f"loop-{uuid.uuid4().hex[:6]}"
    resources = {
        "warehouse": warehouse,
        "dataset": Dataset(path=str(settings.dataset)),
        "training": TrainingConfig(**TINY),
        "registry": ModelRegistry(tracking_uri=mlflow_server, model_name=model_name, promotion_margin=0.05),
        "monitoring": Monitoring(tracking_uri=mlflow_server, model_name=model_name),
    }
    definitions = dg.Definitions(
        assets=[training_dataset, hyperparameter_study, candidate_model, model_evaluation, production_model,
                build_drift_report(spec)],
        asset_checks=[challenger_beats_champion],
        jobs=[retrain_job],
        resources=resources,
    )
    retrain = definitions.get_job_def(RETRAIN_JOB)
    with dg.instance_for_test() as instance:
        assert retrain.execute_in_process(instance=instance).success
        champion = champion_version(mlflow_server, model_name)
        assert champion is not None

        moved = features[features["partition_key"] == SHIFTED].copy()
        for column in AREAS:
            moved[column] = moved[column] * 1.6
        moved[spec.target] = moved[spec.target] * 1.8
        moved.to_sql("features", warehouse.engine, schema="price_data", index=False, if_exists="append")

        def drift_then_sensor(cursor: str | None) -> dg.SensorResult:
            report = dg.materialize([build_drift_report(spec)], partition_key=SHIFTED, instance=instance,
                                    resources=resources)
            metadata = report.asset_materializations_for_node("drift_report")[0].metadata
            assert metadata["drift_detected"].value is True
            assert metadata["champion_version"].value == champion
            return retrain_on_drift(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))

        first = drift_then_sensor(None)
        [request] = first.run_requests
        result = retrain.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)
        [verdict] = [e for e in result.get_asset_check_evaluations() if e.check_name == "challenger_beats_champion"]
        assert not verdict.passed and "does not beat champion" in verdict.description
        assert champion_version(mlflow_server, model_name) == champion
        last = deployments(warehouse.dsn, model_name)[-1]
        assert (last.action, last.from_version) == ("refuse", champion)

        second = drift_then_sensor(first.cursor)
        assert len(second.run_requests) == 1
        assert second.run_requests[0].run_key != request.run_key


def test_the_drift_check_job_rebuilds_a_new_months_features_and_measures_its_drift(settings, mlflow_server):
    """The job ``drift_on_new_sales`` starts, from the full Definitions: dbt for the month, then drift."""
    import json

    from price_platform.definitions import build_definitions
    from price_platform.defs.features.project import build_vars, dbt_executable, dbt_project
    from price_platform.defs.features.resources import PlatformDbt
    from price_platform.defs.monitoring.jobs import DRIFT_JOB
    from price_platform.ingestion.records import PARTITION_KEY, typed_records
    from price_platform.ingestion.sources import read_source
    from price_platform.ingestion.tables import PartitionLoad, ensure_raw_sales, replace_partition

    own = settings.model_copy(update={  # a registry without this model: no champion yet
        "database_name": f"pp_check_{uuid.uuid4().hex[:8]}", "mlflow_tracking_uri": mlflow_server,
        "model_name": f"none-{uuid.uuid4().hex[:6]}",
    })
    warehouse = Warehouse.from_settings(own)
    try:
        spec = load_dataset(own.dataset)
        records = typed_records(spec, read_source(spec))
        moved = records[PARTITION_KEY] == SHIFTED
        for column in [*AREAS, spec.target]:
            records[column] = records[column].astype(float)
            records.loc[moved, column] = records.loc[moved, column] * (1.8 if column == spec.target else 1.6)
        with warehouse.connect() as connection, connection.cursor() as cursor:
            ensure_raw_sales(cursor, spec)
            for key, rows in records[records[PARTITION_KEY] <= SHIFTED].groupby(PARTITION_KEY):
                replace_partition(cursor, spec, PartitionLoad(
                    load_id=uuid.uuid4(), partition_key=str(key), source_kind="bundled", source_name="sample",
                    accepted=rows, rejected=rows.iloc[0:0], reasons={},
                ))
        dbt = PlatformDbt(project_dir=dbt_project(), dbt_executable=dbt_executable(), warehouse=warehouse)
        built = dbt.cli(["build", "--vars", json.dumps(build_vars(spec, None, "2009-12-01"))], raise_on_error=False)
        assert built.wait().is_successful()

        job = build_definitions(own).get_job_def(DRIFT_JOB)
        result = job.execute_in_process(partition_key=SHIFTED, instance=dg.DagsterInstance.ephemeral())
        assert result.success
        materialized = {e.asset_key.to_user_string(): e.partition for e in result.get_asset_materialization_events()}
        assert materialized["features"] == materialized["drift_report"] == SHIFTED
        assert "raw_sales" not in materialized
        report = result.asset_materializations_for_node("drift_report")[0].metadata
        assert report["drift_detected"].value is True
        assert report["reference_window"].value == f"... .. {SHIFTED}"  # every earlier month: no champion yet
    finally:
        warehouse.engine.dispose()
        drop_databases(warehouse.server)
