"""The ``raw_sales`` asset: one partition of sales records, loaded from the sample, a landed file or a query."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from price_platform.datasets import DatasetSpec
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.tables import raw_sales_columns
from price_platform.partitions import sales_partitions
from price_platform.resources import Dataset, Warehouse

RAW_SALES = dg.AssetKey(["raw_sales"])


class RawSalesConfig(dg.Config):
    """Which source a run loads into its partition."""

    source_file: str | None = Field(
        default=None, description="A landed CSV/Parquet file to load; unset: the data set's own source."
    )


def build_raw_sales(spec: DatasetSpec) -> dg.AssetsDefinition:
    """The ``raw_sales`` asset, partitioned as the data set is (months, or arrival batches)."""
    columns = raw_sales_columns(spec).items()
    schema = dg.TableSchema(columns=[dg.TableColumn(name, sql_type.split(" not null")[0]) for name, sql_type in columns])

    @dg.asset(
        key=RAW_SALES,
        partitions_def=sales_partitions(spec),
        group_name="ingestion",
        kinds={"postgres"},
        metadata={"dagster/table_name": "price_data.raw_sales", "dagster/column_schema": schema},
    )
    def raw_sales(
        context: dg.AssetExecutionContext, config: RawSalesConfig, warehouse: Warehouse, dataset: Dataset
    ) -> dg.MaterializeResult:
        """Sales records of one partition, typed and stripped, with bad rows set aside in rejected_rows."""
        from price_platform.ingestion.loading import ingest_partition  # imports Great Expectations: slow

        source_file = Path(config.source_file) if config.source_file else None
        try:
            summary = ingest_partition(warehouse.dsn, dataset.spec, context.partition_key, source_file)
        except IngestionError as error:
            raise dg.Failure(description=str(error)) from error
        context.log.info(
            "%s: %d rows loaded, %d rejected from %s", summary.partition_key, summary.rows_loaded,
            summary.rows_rejected, summary.source_name,
        )
        return dg.MaterializeResult(
            metadata={
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
        )

    return raw_sales
