"""Features domain: the dbt project under ``dbt/`` as partitioned Dagster assets with dbt tests as checks."""

from __future__ import annotations

import dagster as dg

from price_platform.datasets import DatasetSpec
from price_platform.defs.resources import Warehouse
from price_platform.settings import Settings


def build_definitions(settings: Settings, spec: DatasetSpec) -> dg.Definitions:
    """The dbt assets for ``spec`` and the ``dbt`` resource bound to the platform database."""
    from price_platform.defs.features.assets import build_dbt_assets
    from price_platform.defs.features.project import dbt_executable, dbt_project
    from price_platform.defs.features.resources import PlatformDbt

    project = dbt_project()
    dbt = PlatformDbt(
        project_dir=project, dbt_executable=dbt_executable(), warehouse=Warehouse.from_settings(settings)
    )
    return dg.Definitions(assets=[build_dbt_assets(spec, project)], resources={"dbt": dbt})
