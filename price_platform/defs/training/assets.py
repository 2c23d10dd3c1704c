"""Training assets: the split features, the hyperparameter study, the candidate model and its evaluation."""

from pathlib import Path

import dagster as dg

from price_platform.defs.automation import FIRST_MODEL
from price_platform.defs.metadata import markdown_table, png
from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.defs.training.resources import TrainingConfig
from price_platform.registry.champion import champion_version, load_rival, load_version
from price_platform.registry.versions import CandidateVersion
from price_platform.training import candidate, study
from price_platform.training.dataset import (
    TrainingSplit,
    manifest_hash,
    read_features,
    split,
)
from price_platform.training.evaluation import Evaluation, evaluate
from price_platform.training.plots import importance_figure
from price_platform.training.study_versions import search_version, study_name, trials_to_add

FEATURES = dg.AssetKey(["features"])
GROUP = "training"


@dg.asset(deps=[FEATURES], group_name=GROUP, kinds={"postgres", "pandas"}, automation_condition=FIRST_MODEL)
def training_dataset(warehouse: Warehouse, dataset: Dataset, training: TrainingConfig) -> dg.Output[TrainingSplit]:
    """Train/validation/holdout windows of the features (by time where the data set has one), with their data version."""
    spec = dataset.spec
    manifest = manifest_hash(Path(training.dbt_manifest_path))
    data = split(
        read_features(warehouse.engine, spec),
        spec,
        holdout_months=training.holdout_months,
        validation_months=training.validation_months,
        seed=training.seed,
        dbt_manifest_hash=manifest,
    )
    return dg.Output(
        data,
        metadata={
            "data_version": data.data_version,
            "split_method": data.split_method,
            "dbt_manifest_hash": manifest,
            "dagster/row_count": len(data.train) + len(data.validation) + len(data.holdout),
            "windows": markdown_table(data.summary()),
        },
        data_version=dg.DataVersion(data.data_version),
    )


@dg.asset(group_name=GROUP, kinds={"optuna", "xgboost"}, automation_condition=FIRST_MODEL)
def hyperparameter_study(
    training_dataset: TrainingSplit,
    warehouse: Warehouse,
    dataset: Dataset,
    training: TrainingConfig,
    registry: ModelRegistry,
) -> dg.Output[study.StudyResult]:
    """XGBoost settings tuned by a seeded, pruned Optuna study kept in PostgreSQL.

    The study is keyed by the data version and the search version (description, search space,
    rounds); a rerun of the same study adds only the trials it lacks up to ``n_trials``.
    """
    storage_url = warehouse.server.url("optuna")
    name = study_name(registry.model_name, training_dataset.data_version, dataset.spec, training.boosting_rounds)
    new_trials = trials_to_add(storage_url, name, training.n_trials)
    result = study.run_study(
        dataset.spec,
        training_dataset,
        storage_url=storage_url,
        study_name=name,
        n_trials=new_trials,
        timeout=training.study_timeout_seconds,
        seed=training.seed,
        threads=training.threads,
        rounds=training.boosting_rounds,
    )
    return dg.Output(
        result,
        metadata={
            "study": result.study_name,
            "search_version": search_version(dataset.spec, training.boosting_rounds),
            "new_trials": new_trials,
            "best_validation_rmsle": result.best_value,
            "trials": result.trials,
            "pruned": result.pruned,
            "seconds": result.seconds,
            "best_params": result.best_params,
            "kernel_weight": result.kernel_weight,
            "trials_table": markdown_table(result.history.tail(50)),
        },
    )


@dg.asset(group_name=GROUP, kinds={"mlflow", "sklearn"}, automation_condition=FIRST_MODEL)
def candidate_model(
    context: dg.AssetExecutionContext,
    training_dataset: TrainingSplit,
    hyperparameter_study: study.StudyResult,
    dataset: Dataset,
    training: TrainingConfig,
    registry: ModelRegistry,
    warehouse: Warehouse,
) -> dg.Output[CandidateVersion]:
    """The blend fitted with the study's best settings, logged to MLflow and registered as ``challenger``."""
    spec = dataset.spec
    trained = candidate.fit_candidate(
        spec,
        training_dataset,
        hyperparameter_study.best_params,
        coverage=training.interval_coverage,
        seed=training.seed,
        threads=training.threads,
        parallel_trees=training.parallel_trees,
        kernel_weight=hyperparameter_study.kernel_weight,
    )
    registered = candidate.register(
        trained,
        spec,
        training_dataset,
        tracking_uri=registry.tracking_uri,
        model_name=registry.model_name,
        dsn=warehouse.dsn,
        dbt_manifest_hash=manifest_hash(Path(training.dbt_manifest_path)),
        run_tags={"dagster_run_id": context.run_id, "optuna_study": hyperparameter_study.study_name},
    )
    return dg.Output(
        registered,
        metadata={
            "model_version": registered.version,
            "mlflow_run_id": registered.run_id,
            "holdout_rmsle": trained.metrics["holdout_rmsle"],
            "baseline_ridge_rmsle": trained.metrics["baseline_ridge_rmsle"],
            "baseline_median_rmsle": trained.metrics["baseline_median_rmsle"],
            "interval_log_halfwidth": trained.interval_log_halfwidth,
            "interval_coverage": trained.metrics["interval_coverage"],
            "shap_importance": png(importance_figure(trained.importance)),
        },
    )


@dg.asset(group_name=GROUP, kinds={"mlflow"}, automation_condition=FIRST_MODEL)
def model_evaluation(
    training_dataset: TrainingSplit,
    candidate_model: CandidateVersion,
    dataset: Dataset,
    registry: ModelRegistry,
) -> dg.Output[Evaluation]:
    """Challenger and current champion measured on the same holdout rows, overall and per segment."""
    challenger = load_version(registry.tracking_uri, registry.model_name, candidate_model.version)
    current = champion_version(registry.tracking_uri, registry.model_name)
    champion = load_rival(registry.tracking_uri, registry.model_name, current)
    result = evaluate(dataset.spec, training_dataset.holdout, challenger, champion)
    return dg.Output(
        result,
        metadata={
            "challenger_version": result.challenger_version,
            "champion_version": result.champion_version or "none",
            "challenger_rmsle": result.challenger["rmsle"],
            "champion_rmsle": result.champion["rmsle"] if result.champion else float("nan"),
            "interval_coverage": result.challenger["interval_coverage"],
            "behaviour_failures": len(result.behaviour_failures),
            "overall": markdown_table(result.table()),
            "per_segment": markdown_table(result.segments),
        },
    )
