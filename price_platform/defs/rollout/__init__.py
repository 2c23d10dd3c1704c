"""Rollout domain: the canary share, offline replay of a challenger, and the sequential gate on live error."""

from __future__ import annotations

import dagster as dg

from price_platform.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """The rollout assets, the job and sensor of the gate, and the ``rollout`` resource built from ``settings``."""
    from price_platform.defs.rollout.assets import canary, rollout_gate, rollout_gate_job
    from price_platform.defs.rollout.resources import Rollout
    from price_platform.defs.rollout.sensors import gate_on_feedback

    return dg.Definitions(
        assets=[canary, rollout_gate],
        jobs=[rollout_gate_job],
        sensors=[gate_on_feedback],
        resources={"rollout": Rollout.from_settings(settings)},
    )
