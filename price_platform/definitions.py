"""The Dagster code location: one ``Definitions`` built from the domain packages under ``defs/``."""

from __future__ import annotations

import dagster as dg

from price_platform.settings import Settings, get_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """All assets, checks, jobs, sensors, schedules and resources of the platform for ``settings``."""
    from price_platform.defs import build_domain_definitions

    return build_domain_definitions(settings)


defs = build_definitions(get_settings())
