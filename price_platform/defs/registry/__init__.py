"""Registry domain: production_model and its blocking champion/challenger gate."""

from __future__ import annotations

import dagster as dg

from price_platform.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """The promotion asset, its gate and the ``registry`` resource built from ``settings``."""
    from price_platform.defs.registry.assets import production_model
    from price_platform.defs.registry.checks import challenger_beats_champion
    from price_platform.defs.registry.resources import ModelRegistry

    return dg.Definitions(
        assets=[production_model],
        asset_checks=[challenger_beats_champion],
        resources={"registry": ModelRegistry.from_settings(settings)},
    )
