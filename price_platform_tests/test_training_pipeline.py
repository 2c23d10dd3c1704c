"""The training chain in Dagster through promotion, the gate, a killed run and the promote/rollback CLI.

Runs on its own platform database (with a ``price_data.features`` table built from the sample)
and the session's real MLflow server, with a tiny study budget.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import dagster as dg
import pytest
from sqlalchemy.engine import make_url

from price_platform import cli
from price_platform.datasets import load_dataset
from price_platform.defs.registry.assets import production_model
from price_platform.defs.registry.checks import challenger_beats_champion
from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.defs.training.assets import (
    candidate_model,
    hyperparameter_study,
    model_evaluation,
    training_dataset,
)
from price_platform.defs.training.resources import TrainingConfig
from price_platform.modeling import build_ridge_baseline
from price_platform.postgres import PostgresServer
from price_platform.registry import ARCHIVED_TAG, CHAMPION, tracking
from price_platform.registry.champion import champion_version
from price_platform.registry.promotion import Verdict, deployments, promote
from price_platform.registry.versions import register_candidate
from price_platform.settings import get_settings
from price_platform.testing import sample_features, write_features
from price_platform_tests.conftest import drop_databases

CHAIN = [training_dataset, hyperparameter_study, candidate_model, model_evaluation, production_model, challenger_beats_champion]
TINY = {"n_trials": 2, "study_timeout_seconds": 120.0, "boosting_rounds": 80, "seed": 42}


@pytest.fixture(scope="module")
def warehouse(system_postgres_url, settings):
    name = f"pp_train_{uuid.uuid4().hex[:8]}"
    server = PostgresServer(server_url=make_url(system_postgres_url), database_name=name)
    server.ensure_databases()
    warehouse = Warehouse(database_url=system_postgres_url, database_name=name, home=str(settings.home))
    write_features(warehouse.engine, sample_features(load_dataset(settings.dataset)))
    yield warehouse
    warehouse.engine.dispose()
    drop_databases(server)


@pytest.fixture(scope="module")
def model_name() -> str:
    return f"chain-{uuid.uuid4().hex[:6]}"


def _resources(warehouse, settings, mlflow_server, model_name, margin=0.0, **training):
    return {
        "warehouse": warehouse,
        "dataset": Dataset(path=str(settings.dataset)),
        "training": TrainingConfig(**{**TINY, **training}),
        "registry": ModelRegistry(tracking_uri=mlflow_server, model_name=model_name, promotion_margin=margin),
    }


def test_training_chain_materializes_through_promotion(warehouse, settings, mlflow_server, model_name) -> None:
    result = dg.materialize(CHAIN, resources=_resources(warehouse, settings, mlflow_server, model_name))
    assert result.success
    version = result.output_for_node("candidate_model").version
    assert champion_version(mlflow_server, model_name) == version
    [row] = deployments(warehouse.dsn, model_name)
    assert (row.action, row.from_version, row.to_version) == ("promote", None, version)

    client = tracking.client(mlflow_server)
    tags = client.get_model_version(model_name, version).tags
    assert float(tags["interval_log_halfwidth"]) > 0
    assert tags["train_start"] == "2006-01-01" and tags["train_end"] == "2009-07-01"
    run = client.get_run(tags["run_id"])
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert {"git_commit", "data_version", "dbt_manifest_hash", "package_set_hash"} <= set(run.data.tags)
    assert {"holdout_rmsle", "holdout_rmse", "holdout_mae", "holdout_mape", "holdout_r2", "interval_coverage",
            "baseline_ridge_rmsle", "baseline_median_rmsle"} <= set(run.data.metrics)
    assert run.data.metrics["holdout_rmsle"] < run.data.metrics["baseline_median_rmsle"]
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/shap_importance.png", "plots/residuals_vs_price.png", "plots/predicted_vs_actual.png"}
    evaluation = result.asset_materializations_for_node("model_evaluation")[0].metadata
    assert "neighborhood" in evaluation["per_segment"].value


def test_gate_refuses_a_challenger_that_does_not_beat_the_champion_by_the_margin(
    warehouse, settings, mlflow_server, model_name
) -> None:
    before = champion_version(mlflow_server, model_name)
    assert before is not None
    result = dg.materialize(
        CHAIN, resources=_resources(warehouse, settings, mlflow_server, model_name, margin=0.5), raise_on_error=False
    )
    challenger = result.output_for_node("candidate_model").version
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "challenger_beats_champion"]
    assert not check.passed and "does not beat champion's" in check.description
    assert result.asset_materializations_for_node("production_model") == []
    assert champion_version(mlflow_server, model_name) == before
    last = deployments(warehouse.dsn, model_name)[-1]
    assert (last.action, last.from_version, last.to_version) == ("refuse", before, challenger)


_KILLED_RUN = """
import json, sys
import dagster as dg
from price_platform_tests.test_training_pipeline import CHAIN
from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.training.resources import TrainingConfig
from price_platform.defs.resources import Dataset, Warehouse
config = json.loads(sys.argv[1])
dg.materialize(CHAIN, resources={
    "warehouse": Warehouse(**config["warehouse"]), "dataset": Dataset(path=config["dataset"]),
    "training": TrainingConfig(n_trials=500, study_timeout_seconds=600, boosting_rounds=1200, seed=7),
    "registry": ModelRegistry(tracking_uri=config["tracking_uri"], model_name=config["model_name"]),
})
"""


def test_a_training_run_killed_midway_leaves_the_champion_untouched(warehouse, settings, mlflow_server, model_name) -> None:
    before = champion_version(mlflow_server, model_name)
    rows_before = deployments(warehouse.dsn, model_name)
    config = {
        "warehouse": {"database_url": warehouse.database_url, "database_name": warehouse.database_name, "home": warehouse.home},
        "dataset": str(settings.dataset),
        "tracking_uri": mlflow_server,
        "model_name": model_name,
    }
    process = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, json.dumps(config)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        study_name_prefix = f"{model_name}-"
        import optuna

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            summaries = optuna.get_all_study_summaries(warehouse.server.url("optuna"))
            if any(s.study_name.startswith(study_name_prefix) and s.n_trials >= 5 for s in summaries):
                break
            time.sleep(1)
        assert process.poll() is None, "the training run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert champion_version(mlflow_server, model_name) == before
    assert deployments(warehouse.dsn, model_name) == rows_before


def test_promote_and_rollback_commands_apply_the_gate_checks(
    warehouse, settings, mlflow_server, model_name, monkeypatch, capsys
) -> None:
    spec = load_dataset(settings.dataset)
    features = sample_features(spec)
    champion = champion_version(mlflow_server, model_name)
    poor_rows = features.head(60)
    poor = build_ridge_baseline(spec, alpha=1000.0).fit(poor_rows[spec.features], poor_rows[spec.target])
    poor_version = register_candidate(
        mlflow_server, model_name, poor, poor_rows[spec.features], dsn=warehouse.dsn,
        interval_log_halfwidth=0.5, data_version="poor", metrics={"holdout_rmsle": 0.01},
    ).version
    for name, value in {
        "DATABASE_URL": warehouse.database_url, "DATABASE_NAME": warehouse.database_name, "HOME": warehouse.home,
        "MLFLOW_TRACKING_URI": mlflow_server, "MODEL_NAME": model_name, "PROMOTION_MARGIN": "0",
    }.items():
        monkeypatch.setenv(f"PRICE_PLATFORM_{name}", value)
    get_settings.cache_clear()
    try:
        rows_before = deployments(warehouse.dsn, model_name)
        assert cli.main(["promote", "999", "--actor", "tester"]) == 1
        assert "999" in capsys.readouterr().err
        assert deployments(warehouse.dsn, model_name) == rows_before
        # Its recorded metric claims 0.01; measured on the holdout it is worse than the champion.
        assert cli.main(["promote", poor_version, "--actor", "tester"]) == 1
        assert "does not beat champion's" in capsys.readouterr().err
        assert champion_version(mlflow_server, model_name) == champion

        promote(mlflow_server, model_name, poor_version, dsn=warehouse.dsn, actor="tester", check=lambda c: Verdict(True, "forced"))
        assert cli.main(["rollback", "--actor", "tester", "--reason", "bad answers"]) == 0
        assert champion_version(mlflow_server, model_name) == champion
        last = deployments(warehouse.dsn, model_name)[-1]
        assert (last.action, last.from_version, last.to_version) == ("rollback", poor_version, champion)
        assert last.reason.startswith("bad answers")
        assert tracking.client(mlflow_server).get_model_version(model_name, poor_version).tags[ARCHIVED_TAG] == "true"
        holders = [
            v.version
            for v in tracking.client(mlflow_server).search_model_versions(f"name = '{model_name}'")
            if CHAMPION in tracking.client(mlflow_server).get_model_version(model_name, v.version).aliases
        ]
        assert holders == [champion]
    finally:
        get_settings.cache_clear()
