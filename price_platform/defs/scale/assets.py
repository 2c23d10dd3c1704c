"""Training when the features outgrow one pandas frame: ``large_candidate_model`` and its promotion.

The in-memory chain (``training_dataset`` -> ``hyperparameter_study`` -> ``candidate_model``
-> ``model_evaluation`` -> ``production_model``) reads the whole features table into pandas;
past a few million sales that no longer fits. The ``train_at_scale`` job is its counterpart:
the fixed XGBoost model fitted partition by partition (Dask when a scheduler is configured
or the size calls for it), calibrated, measured on the same holdout window, behaviour-tested,
registered as ``challenger``, and promoted to ``champion`` by the recorded-metric gate.
"""

from pathlib import Path

import dagster as dg

from price_platform.defs.metadata import markdown_table, png
from price_platform.defs.registry.assets import announced
from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.defs.scale.resources import ScaleTraining
from price_platform.defs.training.assets import FEATURES
from price_platform.defs.training.resources import TrainingConfig
from price_platform.registry.promotion import metric_gate, promote
from price_platform.registry.versions import CandidateVersion, register_candidate
from price_platform.training.dataset import manifest_hash
from price_platform.training.large_candidate import data_version, fit_large_candidate
from price_platform.training.plots import predicted_actual_figure, residual_figure

GROUP = "scale"


@dg.asset(deps=[FEATURES], group_name=GROUP, pool="training", kinds={"xgboost", "dask", "mlflow"})
def large_candidate_model(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    dataset: Dataset,
    training: TrainingConfig,
    scale_training: ScaleTraining,
    registry: ModelRegistry,
) -> dg.Output[CandidateVersion]:
    """The fixed XGBoost model fitted on every feature partition but the holdout's, registered as ``challenger``."""
    spec = dataset.spec
    manifest = manifest_hash(Path(training.dbt_manifest_path))
    trained = fit_large_candidate(
        scale_training.engine_settings(training.threads),
        warehouse.dsn,
        spec,
        holdout_months=training.holdout_months,
        validation_months=training.validation_months,
        coverage=training.interval_coverage,
        rounds=scale_training.rounds,
    )
    version_of_data = data_version(list(trained.windows.rows.items()), manifest)
    actual, predicted = trained.plotted
    fit_keys = trained.windows.fit
    registered = register_candidate(
        registry.tracking_uri,
        registry.model_name,
        trained.pipeline,
        trained.input_example,
        dsn=warehouse.dsn,
        interval_log_halfwidth=trained.interval_log_halfwidth,
        data_version=version_of_data,
        dbt_manifest_hash=manifest,
        metrics=trained.metrics,
        params={"engine": trained.engine, "boosting_rounds": scale_training.rounds},
        tags={"dagster_run_id": context.run_id, "training": "at_scale"},
        version_tags={"train_start": fit_keys[0], "train_end": fit_keys[-1]},
        figures={
            "residuals_vs_price": residual_figure(actual, predicted),
            "predicted_vs_actual": predicted_actual_figure(actual, predicted),
        },
    )
    return dg.Output(
        registered,
        metadata={
            "model_version": registered.version,
            "mlflow_run_id": registered.run_id,
            "engine": trained.engine,
            "data_version": version_of_data,
            "holdout_rmsle": trained.metrics["holdout_rmsle"],
            "interval_coverage": trained.metrics["interval_coverage"],
            "fit_seconds": trained.metrics["fit_seconds"],
            "dagster/row_count": int(trained.metrics["train_rows"]),
            "windows": markdown_table(trained.windows.summary()),
            "predicted_vs_actual": png(predicted_actual_figure(actual, predicted)),
        },
    )


@dg.asset(group_name=GROUP, kinds={"mlflow", "postgres"})
def large_production_model(
    context: dg.AssetExecutionContext,
    large_candidate_model: CandidateVersion,
    registry: ModelRegistry,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """The alias ``champion`` moved to the large candidate if its holdout RMSLE beats the champion's."""
    row = promote(
        registry.tracking_uri,
        registry.model_name,
        large_candidate_model.version,
        dsn=warehouse.dsn,
        actor="dagster",
        reason=f"training at scale, run {context.run_id}",
        check=metric_gate(registry.tracking_uri, registry.model_name, large_candidate_model.version, registry.promotion_margin),
        dagster_run_id=context.run_id,
    )
    return dg.MaterializeResult(metadata=announced(registry, row))


TRAIN_AT_SCALE = dg.define_asset_job(
    "train_at_scale",
    selection=dg.AssetSelection.groups(GROUP),
    description="Train, measure, register and (if better) promote the model partition by partition, for large data.",
)
