"""The champion/challenger gate: a blocking check on the evaluation, before ``production_model``."""


import dagster as dg

from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.resources import Warehouse
from price_platform.registry.promotion import record_refusal
from price_platform.training.evaluation import Evaluation


@dg.asset_check(asset="model_evaluation", blocking=True, description="The challenger beats the champion and behaves.")
def challenger_beats_champion(
    context: dg.AssetCheckExecutionContext, model_evaluation: Evaluation, registry: ModelRegistry, warehouse: Warehouse
) -> dg.AssetCheckResult:
    """Passes when the challenger behaves and beats the champion's holdout RMSLE by the margin; a refusal is recorded."""
    verdict = model_evaluation.verdict(registry.promotion_margin)
    if not verdict.passed:
        record_refusal(
            warehouse.dsn,
            registry.model_name,
            model_evaluation.challenger_version,
            verdict,
            champion=model_evaluation.champion_version,
            actor="dagster",
            reason=f"training run {context.run.run_id}",
            dagster_run_id=context.run.run_id,
        )
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=verdict.reason,
        metadata={
            "challenger_version": model_evaluation.challenger_version,
            "champion_version": model_evaluation.champion_version or "none",
            "margin": registry.promotion_margin,
            **{name: value for name, value in verdict.metrics.items() if name.endswith("rmsle")},
        },
    )
