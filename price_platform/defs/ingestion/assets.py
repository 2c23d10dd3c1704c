"""The ``raw_sales`` asset: partitions of sales records, loaded from the sample, a landed file or a query.

A backfill of many months runs as one run (``BackfillPolicy.single_run``): Great Expectations
and the run's process start once instead of once a month. Each month still gets its own
materialization with its own row counts, so the partitions stay visible one by one in the UI.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd
from pydantic import Field

from price_platform.datasets import DatasetSpec
from price_platform.defs.partitions import sales_partitions
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.tables import raw_sales_columns

if TYPE_CHECKING:
    from price_platform.ingestion.loading import LoadSummary

RAW_SALES = dg.AssetKey(["raw_sales"])


class RawSalesConfig(dg.Config):
    """Which source a run loads into its partition."""

    source_file: str | None = Field(
        default=None,
        description="A landed CSV/Parquet file to load into the run's one partition; unset: the data set's own source.",
    )


def build_raw_sales(spec: DatasetSpec) -> dg.AssetsDefinition:
    """The ``raw_sales`` asset, partitioned as the data set is (months, or arrival batches)."""
    columns = raw_sales_columns(spec).items()
    schema = dg.TableSchema(columns=[dg.TableColumn(name, sql_type.split(" not null")[0]) for name, sql_type in columns])

    @dg.asset(
        key=RAW_SALES,
        partitions_def=sales_partitions(spec),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="ingestion",
        kinds={"postgres"},
        metadata={"dagster/table_name": "price_data.raw_sales", "dagster/column_schema": schema},
    )
    def raw_sales(
        context: dg.AssetExecutionContext, config: RawSalesConfig, warehouse: Warehouse, dataset: Dataset
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
        """Sales records of the run's partitions, typed and stripped, with bad rows set aside in rejected_rows."""
        from price_platform.ingestion.loading import ingest_partitions  # imports Great Expectations: slow

        keys = context.partition_keys
        if config.source_file and len(keys) > 1:
            raise dg.Failure(description=f"source_file loads one partition; this run covers {len(keys)}")
        source_file = Path(config.source_file) if config.source_file else None
        try:
            summaries = ingest_partitions(warehouse.dsn, dataset.spec, keys, source_file)
        except IngestionError as error:
            raise dg.Failure(description=str(error)) from error
        for summary in summaries:
            context.log.info(
                "%s: %d rows loaded, %d rejected from %s", summary.partition_key, summary.rows_loaded,
                summary.rows_rejected, summary.source_name,
            )
        # The run's own materialization covers every partition of the run; the per-partition
        # materializations that follow it are each partition's latest, with its own figures.
        yield dg.MaterializeResult(metadata=run_metadata(summaries))
        if len(summaries) > 1:
            for summary in summaries:
                yield dg.AssetMaterialization(
                    asset_key=RAW_SALES, partition=summary.partition_key, metadata=partition_metadata(summary)
                )

    return raw_sales


def partition_metadata(summary: "LoadSummary") -> dict[str, object]:
    """What the UI shows for one loaded partition: counts, source, previews of kept and rejected rows."""
    return {
        "dagster/row_count": summary.rows_loaded,
        "rows_rejected": summary.rows_rejected,
        "rejected_share": dg.MetadataValue.float(summary.rejected_share),
        "load_id": str(summary.load_id),
        "source": summary.source_kind,
        "source_file": summary.source_name,
        "preview": dg.MetadataValue.md(summary.preview.to_markdown(index=False)),
        "rejected_rows": dg.MetadataValue.md(
            summary.rejected_preview.to_markdown(index=False) if summary.rows_rejected else "none"
        ),
    }


def run_metadata(summaries: "list[LoadSummary]") -> dict[str, object]:
    """One partition's metadata, or for a run over many a table of their counts."""
    if len(summaries) == 1:
        return partition_metadata(summaries[0])
    table = pd.DataFrame(
        {
            "partition": [summary.partition_key for summary in summaries],
            "rows_loaded": [summary.rows_loaded for summary in summaries],
            "rows_rejected": [summary.rows_rejected for summary in summaries],
        }
    )
    return {
        "dagster/row_count": int(table.rows_loaded.sum()),
        "rows_rejected": int(table.rows_rejected.sum()),
        "partitions": len(summaries),
        "partitions_loaded": dg.MetadataValue.md(table.to_markdown(index=False)),
    }
