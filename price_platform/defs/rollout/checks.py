"""The gate before live traffic: a blocking check that the replayed challenger is not worse than what was answered."""

import dagster as dg

from price_platform.rollout.replay import ReplayResult


@dg.asset_check(asset="offline_replay", blocking=True,
                description="On the replayed requests, the challenger's RMSLE is not above the answers given then.")
def replay_not_worse(offline_replay: ReplayResult) -> dg.AssetCheckResult:
    """Fails (and so blocks the canary) when the challenger replays worse; warns when the period had no priced requests."""
    metadata = offline_replay.as_metadata()
    if offline_replay.requests == 0:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, metadata=metadata,
            description=f"no logged requests with a price from {offline_replay.start} to {offline_replay.end}:"
            " nothing to replay, the canary is not blocked",
        )
    verdict = "worse than" if offline_replay.worse else "not worse than"
    return dg.AssetCheckResult(
        passed=not offline_replay.worse,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=f"challenger {offline_replay.challenger} replays {verdict} the answers given: RMSLE"
        f" {offline_replay.challenger_rmsle:.5f} vs {offline_replay.champion_rmsle:.5f} on {offline_replay.requests}"
        " requests",
    )
