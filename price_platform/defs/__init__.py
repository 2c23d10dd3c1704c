"""Definitions grouped by domain: ingestion, features (dbt), training, registry, monitoring, operations, scale, rollout."""

from __future__ import annotations

import dagster as dg

from price_platform.datasets import load_dataset
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.settings import Settings


def build_domain_definitions(settings: Settings) -> dg.Definitions:
    """Merge every domain's definitions and bind the shared resources."""
    spec = load_dataset(settings.dataset)
    domains: list[dg.Definitions] = []
    from price_platform.defs import ingestion

    domains.append(ingestion.build_definitions(settings, spec))
    from price_platform.defs import features

    domains.append(features.build_definitions(settings, spec))
    from price_platform.defs import registry, training

    domains.append(training.build_definitions(settings))
    domains.append(registry.build_definitions(settings))
    from price_platform.defs import monitoring

    domains.append(monitoring.build_definitions(settings, spec))
    from price_platform.defs import operations

    domains.append(operations.build_definitions(settings))
    from price_platform.defs import scale

    domains.append(scale.build_definitions(settings))
    from price_platform.defs import rollout

    domains.append(rollout.build_definitions(settings))
    resources = {
        "warehouse": Warehouse.from_settings(settings),
        "dataset": Dataset(path=str(settings.dataset)),
    }
    from price_platform.defs import automation

    return dg.Definitions.merge(*domains, dg.Definitions(sensors=[automation.SENSOR], resources=resources))
