"""The dbt models (staging -> intermediate -> features) as Dagster assets, partitioned like ``raw_sales``."""

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd
from dagster_dbt import DagsterDbtTranslator, DbtProject, dbt_assets

from price_platform.datasets import DatasetSpec
from price_platform.defs.features.project import build_vars
from price_platform.defs.features.refresh import stale_description
from price_platform.defs.features.resources import PlatformDbt
from price_platform.defs.partitions import sales_partitions
from price_platform.defs.resources import Warehouse

FEATURES = "features"
_PREVIEW_COLUMNS = 8


class FeaturesTranslator(DagsterDbtTranslator):
    """dbt models follow their inputs: a newly loaded partition that passed its blocking checks is rebuilt."""

    def get_automation_condition(self, dbt_resource_props: Any) -> dg.AutomationCondition:
        return dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def build_dbt_assets(spec: DatasetSpec, project: DbtProject) -> dg.AssetsDefinition:
    """One ``@dbt_assets`` over the whole project; its dbt tests become asset checks.

    Monthly data sets backfill in one dbt run over the whole window (``min_partition`` ..
    ``max_partition``); arrival batches have no order between keys, so they run one per run.
    Outside backfills the models are materialised eagerly (the latest month, every new batch).
    """
    backfill_policy = dg.BackfillPolicy.single_run() if spec.has_time else dg.BackfillPolicy.multi_run(1)

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        name="price_features_dbt",
        partitions_def=sales_partitions(spec),
        backfill_policy=backfill_policy,
        dagster_dbt_translator=FeaturesTranslator(),
        pool="dbt",
    )
    def price_features_dbt(context: dg.AssetExecutionContext, dbt: PlatformDbt) -> Iterator[Any]:
        """Rebuild the features of the run's partitions from raw_sales, then run dbt's tests on them.

        When the data set description changed since the table was built, every partition is
        rebuilt (``--full-refresh``), so the table takes the new description's columns.
        """
        first, last = context.partition_key_range
        stale = stale_description(dbt.warehouse, spec)
        if stale:
            context.log.warning(stale)
            args = ["build", "--full-refresh", "--vars", json.dumps(build_vars(spec, None, None))]
        else:
            args = ["build", "--vars", json.dumps(build_vars(spec, first, last))]
        invocation = dbt.cli(args, context=context)
        for event in invocation.stream():
            if isinstance(event, dg.Output) and event.output_name == FEATURES:
                extra = {**features_metadata(dbt.warehouse, first, last), "full_refresh": stale or "no"}
                event = event.with_metadata({**event.metadata, **extra})
            yield event

    return price_features_dbt


def features_metadata(warehouse: Warehouse, first: str, last: str) -> dict[str, Any]:
    """Row counts of the features table and of the partition window, and a preview of the window's rows."""
    window = "partition_key between %(first)s and %(last)s"
    with warehouse.engine.connect() as connection:
        counts = pd.read_sql_query(
            f"select count(*) as total, count(*) filter (where {window}) as in_window,"
            " count(distinct partition_key) as partitions from price_data.features",
            connection,
            params={"first": first, "last": last},
        )
        preview = pd.read_sql_query(
            f"select * from price_data.features where {window} order by arrival_seq limit 5",
            connection,
            params={"first": first, "last": last},
        )
    return {
        "dagster/row_count": int(counts.total[0]),
        "rows_in_window": int(counts.in_window[0]),
        "partitions_in_table": int(counts.partitions[0]),
        "preview": dg.MetadataValue.md(preview.iloc[:, :_PREVIEW_COLUMNS].to_markdown(index=False)),
    }
