"""Rollout domain: the canary share, offline replay of a challenger, and the sequential gate on live error."""

from __future__ import annotations

import dagster as dg

from price_platform.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """The rollout assets, the job and sensor of the gate, and the ``rollout`` resource built from ``settings``."""
    from price_platform.defs.rollout.assets import canary, canary_job, offline_replay, rollout_gate, rollout_gate_job
    from price_platform.defs.rollout.checks import replay_not_worse
    from price_platform.defs.rollout.resources import Rollout
    from price_platform.defs.rollout.sensors import gate_on_feedback

    return dg.Definitions(
        assets=[offline_replay, canary, rollout_gate],
        asset_checks=[replay_not_worse],
        jobs=[canary_job, rollout_gate_job],
        sensors=[gate_on_feedback],
        resources={"rollout": Rollout.from_settings(settings)},
    )
