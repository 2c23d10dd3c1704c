"""The production model: the challenger promoted to ``champion`` once its gate has passed."""

from typing import Any

import dagster as dg

from price_platform.defs.automation import FIRST_MODEL
from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.resources import Warehouse
from price_platform.registry.announce import announce_champion
from price_platform.registry.promotion import Deployment, Verdict, metric_gate, promote
from price_platform.training.evaluation import Evaluation

GROUP = "registry"


@dg.asset(group_name=GROUP, kinds={"mlflow", "postgres"}, automation_condition=FIRST_MODEL)
def production_model(
    context: dg.AssetExecutionContext, model_evaluation: Evaluation, registry: ModelRegistry, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The alias ``champion`` moved to the evaluated challenger, with its ``deployments`` row.

    With ``live_rollout`` (setting ``rollout_after_retrain``) a challenger that passed the gate
    against an existing champion is not promoted here: it stays ``challenger`` for shadow,
    canary and the sequential gate of :mod:`price_platform.rollout`.
    """
    margin = registry.promotion_margin
    if registry.live_rollout and model_evaluation.champion_version is not None:
        return dg.MaterializeResult(metadata={
            "champion_version": model_evaluation.champion_version,
            "challenger_version": model_evaluation.challenger_version,
            "reason": "beats the champion on the holdout; left as challenger for the live rollout",
            "holdout_rmsle": model_evaluation.challenger["rmsle"],
        })

    def check(champion: str | None) -> Verdict:
        if champion == model_evaluation.champion_version:
            return model_evaluation.verdict(margin)
        # The champion changed since the evaluation: judge against the new one's recorded metrics.
        return metric_gate(registry.tracking_uri, registry.model_name, model_evaluation.challenger_version, margin)(champion)

    row = promote(
        registry.tracking_uri,
        registry.model_name,
        model_evaluation.challenger_version,
        dsn=warehouse.dsn,
        actor="dagster",
        reason=f"training run {context.run_id}",
        check=check,
        dagster_run_id=context.run_id,
    )
    return dg.MaterializeResult(
        metadata={**announced(registry, row), "holdout_rmsle": model_evaluation.challenger["rmsle"]}
    )


def announced(registry: ModelRegistry, row: Deployment) -> dict[str, Any]:
    """Tell the API servers about the new champion; the promotion's metadata for the Dagster UI."""
    heard_by = announce_champion(registry.redis_url, registry.model_name, row.to_version)
    return {
        "champion_version": row.to_version,
        "replaced_version": row.from_version or "none",
        "deployment_id": row.id,
        "reason": row.reason,
        "api_servers_notified": heard_by,
    }
