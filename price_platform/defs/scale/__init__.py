"""Scale domain: the candidate trained partition by partition (or on Dask), its promotion, and their job."""

from __future__ import annotations

import dagster as dg

from price_platform.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """The large-data training assets, the ``train_at_scale`` job and the ``scale_training`` resource (the engine)."""
    from price_platform.defs.scale.assets import TRAIN_AT_SCALE, large_candidate_model, large_production_model
    from price_platform.defs.scale.resources import ScaleTraining

    return dg.Definitions(
        assets=[large_candidate_model, large_production_model],
        jobs=[TRAIN_AT_SCALE],
        resources={"scale_training": ScaleTraining.from_settings(settings)},
    )
