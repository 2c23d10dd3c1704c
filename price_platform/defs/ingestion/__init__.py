"""Ingestion domain: the ``raw_sales`` asset, its blocking GX checks, the landing sensor and the daily schedule."""

from __future__ import annotations

import dagster as dg

from price_platform.datasets import DatasetSpec
from price_platform.settings import Settings


def build_definitions(settings: Settings, spec: DatasetSpec) -> dg.Definitions:
    """Ingestion definitions for a data set; a data set without time gets no daily schedule (it has no months)."""
    from price_platform.defs.ingestion.assets import build_raw_sales
    from price_platform.defs.ingestion.checks import build_checks
    from price_platform.defs.ingestion.schedules import build_daily_ingestion, build_ingestion_job
    from price_platform.defs.ingestion.sensors import build_landing_sensor

    return dg.Definitions(
        assets=[build_raw_sales(spec)],
        asset_checks=build_checks(spec, settings.max_rejected_share),
        jobs=[build_ingestion_job()],
        sensors=[build_landing_sensor(spec, settings.landing)],
        schedules=[build_daily_ingestion(spec)] if spec.has_time else [],
    )
