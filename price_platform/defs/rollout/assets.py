"""Offline replay of the challenger, the canary share (asset config) and the sequential gate's state."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd

from price_platform.defs.metadata import markdown_table
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.defs.rollout.resources import Rollout
from price_platform.registry.announce import announce_champion
from price_platform.rollout import gate, traffic
from price_platform.rollout.replay import ReplayError, replay

GROUP = "rollout"
ROLLOUT_GATE = dg.AssetKey("rollout_gate")
CANARY = dg.AssetKey("canary")
OFFLINE_REPLAY = dg.AssetKey("offline_replay")
#: Days replayed when no period is given: the four weeks before the run.
REPLAY_DAYS = 28


class ReplayConfig(dg.Config):
    """The period of logged requests to replay (ISO dates or times; empty: the last four weeks)."""

    start: str = ""
    end: str = ""

    def period(self) -> tuple[datetime, datetime]:
        try:
            end = _instant(self.end) if self.end else datetime.now(UTC)
            start = _instant(self.start) if self.start else end - timedelta(days=REPLAY_DAYS)
        except ValueError as error:
            raise ReplayError(f"replay period: {error}") from None
        return start, end


@dg.asset(group_name=GROUP, kinds={"mlflow", "postgres"})
def offline_replay(config: ReplayConfig, rollout: Rollout, warehouse: Warehouse, dataset: Dataset) -> dg.Output:
    """The challenger's RMSLE on a period's logged requests with known prices, beside what was answered then."""
    challenger = traffic.current(rollout.tracking_uri, rollout.model_name).challenger
    if challenger is None:
        raise ReplayError(f"{rollout.model_name} has no 'challenger' version to replay")
    start, end = config.period()
    result = replay(rollout.tracking_uri, rollout.model_name, challenger, dsn=warehouse.dsn, spec=dataset.spec,
                    start=start, end=end)
    return dg.Output(result, metadata=result.as_metadata())


class CanaryConfig(dg.Config):
    """How much of the traffic the ``challenger`` answers (0 stops the canary)."""

    share: float = 0.1


@dg.asset(group_name=GROUP, kinds={"mlflow"}, deps=[OFFLINE_REPLAY])
def canary(context: dg.AssetExecutionContext, config: CanaryConfig, rollout: Rollout,
           warehouse: Warehouse) -> dg.MaterializeResult:
    """The share of live requests the ``challenger`` answers, set in the registry (API servers read it at their alias poll)."""
    state = traffic.set_canary(rollout.tracking_uri, rollout.model_name, config.share, dsn=warehouse.dsn,
                               actor=f"dagster run {context.run_id}")
    return dg.MaterializeResult(metadata=_traffic_metadata(state))


@dg.asset(group_name=GROUP, kinds={"mlflow", "postgres"})
def rollout_gate(context: dg.AssetExecutionContext, rollout: Rollout, warehouse: Warehouse) -> dg.MaterializeResult:
    """The sequential gate's state: waiting, or the challenger promoted or rolled back on paired live errors."""
    state = gate.evaluate(rollout.tracking_uri, rollout.model_name, dsn=warehouse.dsn, test=rollout.test,
                          actor="dagster", dagster_run_id=context.run_id)
    if state is None:
        return dg.MaterializeResult(metadata={"status": "no challenger to judge",
                                              **_traffic_metadata(traffic.current(rollout.tracking_uri,
                                                                                  rollout.model_name))})
    heard = 0
    if state.acted and state.status == gate.PROMOTED:
        heard = announce_champion(rollout.redis_url, rollout.model_name, state.challenger)
    context.log.info("rollout of version %s against %s: %s (%s)", state.challenger, state.champion, state.status,
                     state.reason)
    figures = pd.DataFrame(
        {"champion": [state.metrics.get("champion_live_rmsle")], "challenger": [state.metrics.get("challenger_live_rmsle")]},
        index=["live RMSLE"],
    )
    return dg.MaterializeResult(
        metadata={
            "status": state.status,
            "decided_now": state.acted,
            "challenger_version": state.challenger,
            "champion_version": state.champion,
            "pairs": state.pairs,
            "reason": state.reason,
            "cs_lower": state.metrics.get("cs_lower"),
            "cs_upper": state.metrics.get("cs_upper"),
            "deployment_id": state.deployment_id,
            "api_servers_notified": heard,
            "live_rmsle": markdown_table(figures, digits=5),
        }
    )


canary_job = dg.define_asset_job(
    "canary_rollout", selection=dg.AssetSelection.assets(OFFLINE_REPLAY, CANARY),
    description="Replay the challenger on logged requests; only if it is not worse, give it its canary share.",
)

rollout_gate_job = dg.define_asset_job(
    "judge_rollout", selection=dg.AssetSelection.assets(ROLLOUT_GATE),
    description="Judge the challenger on paired live errors: promote it, roll it back, or wait.",
)


def _traffic_metadata(state: traffic.Traffic) -> dict[str, object]:
    return {
        "champion_version": state.champion or "none",
        "challenger_version": state.challenger or "none",
        "shadow_version": state.shadow or "none",
        "canary_share": state.canary_share,
    }


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
