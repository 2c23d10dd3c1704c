"""Blocking validation of each ``raw_sales`` partition: its records meet the suite, few of them were rejected."""

import dagster as dg

from price_platform.datasets import DatasetSpec
from price_platform.defs.ingestion.assets import RAW_SALES
from price_platform.partitions import sales_partitions
from price_platform.resources import Dataset, Warehouse


def build_checks(spec: DatasetSpec, max_rejected_share: float) -> list[dg.AssetChecksDefinition]:
    """The Great Expectations suite on the stored rows, and the rejected-share gate."""
    partitions = sales_partitions(spec)

    @dg.asset_check(asset=RAW_SALES, blocking=True, partitions_def=partitions)
    def records_meet_expectations(
        context: dg.AssetCheckExecutionContext, warehouse: Warehouse, dataset: Dataset
    ) -> dg.AssetCheckResult:
        """The partition's stored records meet the data set's Great Expectations suite (e.g. no duplicate ids)."""
        from price_platform.ingestion.tables import read_partition
        from price_platform.validation.validate import validate_records

        with warehouse.connect() as connection:
            records = read_partition(connection, dataset.spec, context.partition_key)
        validation = validate_records(dataset.spec, records[dataset.spec.columns])
        return dg.AssetCheckResult(
            passed=validation.success,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows": len(records),
                "expectations": len(validation.results),
                "failed_expectations": len(validation.failed),
                "failures": dg.MetadataValue.md(validation.markdown() or "none"),
            },
        )

    @dg.asset_check(asset=RAW_SALES, blocking=True, partitions_def=partitions)
    def rejected_share_within_limit(
        context: dg.AssetCheckExecutionContext, warehouse: Warehouse
    ) -> dg.AssetCheckResult:
        """The share of the partition's records set aside as bad stays within ``max_rejected_share``."""
        from price_platform.ingestion.tables import partition_counts

        with warehouse.connect() as connection:
            stored, rejected = partition_counts(connection, context.partition_key)
        share = rejected / (stored + rejected) if stored + rejected else 0.0
        return dg.AssetCheckResult(
            passed=share <= max_rejected_share,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{rejected} of {stored + rejected} records rejected ({share:.1%}; limit {max_rejected_share:.1%})",
            metadata={
                "rows_stored": stored,
                "rows_rejected": rejected,
                "rejected_share": dg.MetadataValue.float(share),
                "max_rejected_share": dg.MetadataValue.float(max_rejected_share),
            },
        )

    return [records_meet_expectations, rejected_share_within_limit]
