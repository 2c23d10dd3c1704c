"""Blocking validation of each ``raw_sales`` partition: its records meet the suite, few of them were rejected.

Both checks run in one step, so that a partition's run loads Great Expectations once for them.
"""

from collections.abc import Iterator

import dagster as dg

from price_platform.datasets import DatasetSpec
from price_platform.defs.ingestion.assets import RAW_SALES
from price_platform.ingestion.tables import partition_counts, read_partition
from price_platform.partitions import sales_partitions
from price_platform.resources import Dataset, Warehouse

RECORDS_MEET_EXPECTATIONS = "records_meet_expectations"
REJECTED_SHARE_WITHIN_LIMIT = "rejected_share_within_limit"


def build_checks(spec: DatasetSpec, max_rejected_share: float) -> list[dg.AssetChecksDefinition]:
    """The Great Expectations suite on the stored rows, and the rejected-share gate, both blocking."""
    partitions = sales_partitions(spec)
    specs = [
        dg.AssetCheckSpec(
            RECORDS_MEET_EXPECTATIONS,
            asset=RAW_SALES,
            blocking=True,
            partitions_def=partitions,
            description="The partition's stored records meet the data set's Great Expectations suite"
            " (types, ranges, categories, nulls, no duplicate ids, target above its minimum).",
        ),
        dg.AssetCheckSpec(
            REJECTED_SHARE_WITHIN_LIMIT,
            asset=RAW_SALES,
            blocking=True,
            partitions_def=partitions,
            description=f"At most {max_rejected_share:.1%} of the partition's records were set aside as bad.",
        ),
    ]

    @dg.multi_asset_check(specs=specs, name="raw_sales_checks")
    def raw_sales_checks(
        context: dg.AssetCheckExecutionContext, warehouse: Warehouse, dataset: Dataset
    ) -> Iterator[dg.AssetCheckResult]:
        """Validates one partition of raw_sales as stored, and gates it on its share of rejected rows."""
        from price_platform.validation.validate import validate_records  # imports Great Expectations: slow

        with warehouse.connect() as connection:
            records = read_partition(connection, dataset.spec, context.partition_key)
            stored, rejected = partition_counts(connection, context.partition_key)
        validation = validate_records(dataset.spec, records[dataset.spec.columns])
        yield dg.AssetCheckResult(
            asset_key=RAW_SALES,
            check_name=RECORDS_MEET_EXPECTATIONS,
            passed=validation.success,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows": len(records),
                "expectations": len(validation.results),
                "failed_expectations": len(validation.failed),
                "failures": dg.MetadataValue.md(validation.markdown() or "none"),
            },
        )
        share = rejected / (stored + rejected) if stored + rejected else 0.0
        yield dg.AssetCheckResult(
            asset_key=RAW_SALES,
            check_name=REJECTED_SHARE_WITHIN_LIMIT,
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

    return [raw_sales_checks]
