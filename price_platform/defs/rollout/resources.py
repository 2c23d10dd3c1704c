"""The rollout domain's resource: the registry it moves aliases in, and the sequential gate's settings."""

from __future__ import annotations

import dagster as dg

from price_platform.rollout.sequential import SequentialTest
from price_platform.settings import Settings, default


class Rollout(dg.ConfigurableResource):
    """Where the challenger, shadow and canary share are registered, and how the gate decides."""

    tracking_uri: str
    model_name: str = default("model_name")
    redis_url: str | None = None  # where a champion the gate promotes is announced
    alpha: float = default("rollout_alpha")
    min_pairs: int = default("rollout_min_pairs")
    max_pairs: int = default("rollout_max_pairs")
    tuned_for: int = default("rollout_tuned_for")

    @classmethod
    def from_settings(cls, settings: Settings) -> Rollout:
        return cls(
            tracking_uri=settings.tracking_uri,
            model_name=settings.model_name,
            redis_url=settings.redis_url,
            alpha=settings.rollout_alpha,
            min_pairs=settings.rollout_min_pairs,
            max_pairs=settings.rollout_max_pairs,
            tuned_for=settings.rollout_tuned_for,
        )

    @property
    def test(self) -> SequentialTest:
        return SequentialTest(alpha=self.alpha, min_pairs=self.min_pairs, tuned_for=self.tuned_for,
                              max_pairs=self.max_pairs)
