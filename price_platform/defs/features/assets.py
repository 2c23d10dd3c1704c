"""The dbt models (staging -> intermediate -> features) as Dagster assets, partitioned like ``raw_sales``."""

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_dbt import DbtProject, dbt_assets

from price_platform.datasets import DatasetSpec
from price_platform.defs.features.project import build_vars
from price_platform.defs.features.resources import PlatformDbt
from price_platform.partitions import sales_partitions


def build_dbt_assets(spec: DatasetSpec, project: DbtProject) -> dg.AssetsDefinition:
    """One ``@dbt_assets`` over the whole project; its dbt tests become asset checks.

    Monthly data sets backfill in one dbt run over the whole window (``min_partition`` ..
    ``max_partition``); arrival batches have no order between keys, so they run one per run.
    """
    backfill_policy = dg.BackfillPolicy.single_run() if spec.has_time else dg.BackfillPolicy.multi_run(1)

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        name="price_features_dbt",
        partitions_def=sales_partitions(spec),
        backfill_policy=backfill_policy,
        pool="dbt",
    )
    def price_features_dbt(context: dg.AssetExecutionContext, dbt: PlatformDbt) -> Iterator[Any]:
        """Rebuild the features of the run's partitions from raw_sales, then run dbt's tests on them."""
        first, last = context.partition_key_range
        dbt_vars = build_vars(spec, first, last)
        invocation = dbt.cli(["build", "--vars", json.dumps(dbt_vars)], context=context)
        yield from invocation.stream().fetch_row_counts()

    return price_features_dbt
