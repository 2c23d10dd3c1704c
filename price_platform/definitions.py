"""The Dagster code location: one ``Definitions`` built from the domain packages under ``defs/``.

Nothing is built when this module is imported: Dagster calls :func:`defs` when it loads the code
location, and tests call :func:`build_definitions` with settings of their own.
"""

from __future__ import annotations

import dagster as dg

from price_platform.settings import Settings, get_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """All assets, checks, jobs, sensors, schedules and resources of the platform for ``settings``."""
    from price_platform.defs import build_domain_definitions

    return build_domain_definitions(settings)


@dg.definitions
def defs() -> dg.Definitions:
    """The code location of this process's settings (``PRICE_PLATFORM_*``)."""
    return build_definitions(get_settings())
