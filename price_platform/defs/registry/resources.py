"""The MLflow tracking server and registered model, as a Dagster resource."""

from __future__ import annotations

import dagster as dg

from price_platform.settings import Settings, default


class ModelRegistry(dg.ConfigurableResource):
    """MLflow tracking/registry server and the registered model the platform trains and serves."""

    tracking_uri: str
    model_name: str = default("model_name")
    promotion_margin: float = default("promotion_margin")
    redis_url: str | None = None  # where a new champion is announced to the API servers
    live_rollout: bool = False  # a challenger that beats a champion is left to the live rollout, not promoted

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        return cls(
            tracking_uri=settings.tracking_uri,
            model_name=settings.model_name,
            promotion_margin=settings.promotion_margin,
            redis_url=settings.redis_url,
            live_rollout=settings.rollout_after_retrain,
        )
