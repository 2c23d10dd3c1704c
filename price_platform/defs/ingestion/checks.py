"""Blocking validation of each ``raw_sales`` partition: its records meet the suite, few of them were rejected.

Both checks run in one step, so that a run loads Great Expectations once for them, however many
partitions it covers.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from price_platform.datasets import DatasetSpec
from price_platform.defs.ingestion.assets import RAW_SALES
from price_platform.defs.partitions import sales_partitions
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.ingestion.tables import partition_counts, read_partition

if TYPE_CHECKING:
    from price_platform.validation.validate import Validation

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
    ) -> Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation]:
        """Validates each partition of the run's raw_sales as stored, and gates it on its share of rejected rows.

        A run over many partitions records each partition's own evaluation, then the run's
        result: passed when every partition passed (the gate for what follows in the run).
        """
        keys = context.partition_keys
        results = check_partitions(warehouse, dataset.spec, keys, max_rejected_share)
        for name in (RECORDS_MEET_EXPECTATIONS, REJECTED_SHARE_WITHIN_LIMIT):
            outcomes = [result[name] for result in results]
            if len(keys) == 1:
                yield dg.AssetCheckResult(asset_key=RAW_SALES, check_name=name, **outcomes[0])
                continue
            for key, outcome in zip(keys, outcomes, strict=True):
                yield dg.AssetCheckEvaluation(asset_key=RAW_SALES, check_name=name, partition=key, **outcome)
            failed = [key for key, outcome in zip(keys, outcomes, strict=True) if not outcome["passed"]]
            yield dg.AssetCheckResult(
                asset_key=RAW_SALES,
                check_name=name,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"{len(keys) - len(failed)} of {len(keys)} partitions passed"
                + (f"; failed: {', '.join(failed)}" if failed else ""),
                metadata={"partitions": len(keys), "partitions_failed": len(failed)},
            )

    return [raw_sales_checks]


def check_partitions(
    warehouse: Warehouse, spec: DatasetSpec, partition_keys: list[str], max_rejected_share: float
) -> list[dict[str, dict[str, object]]]:
    """Both checks' outcomes for each stored partition, from one run of the suite over all of them."""
    from price_platform.validation.validate import validate_records  # imports Great Expectations: slow

    with warehouse.connect() as connection:
        parts = [read_partition(connection, spec, key) for key in partition_keys]
        counts = [partition_counts(connection, key) for key in partition_keys]
    records = pd.concat(parts, ignore_index=True)
    validation = validate_records(spec, records[spec.columns])
    outcomes, start = [], 0
    for part, (stored, rejected) in zip(parts, counts, strict=True):
        rows = range(start, start + len(part))
        start += len(part)
        outcomes.append(partition_outcomes(validation.restricted_to(rows), len(part), stored, rejected, max_rejected_share))
    return outcomes


def partition_outcomes(
    validation: "Validation", rows: int, stored: int, rejected: int, max_rejected_share: float
) -> dict[str, dict[str, object]]:
    """Both checks' outcomes (passed, severity, description, metadata) for one stored partition."""
    share = rejected / (stored + rejected) if stored + rejected else 0.0
    return {
        RECORDS_MEET_EXPECTATIONS: {
            "passed": validation.success,
            "severity": dg.AssetCheckSeverity.ERROR,
            "metadata": {
                "rows": rows,
                "expectations": len(validation.results),
                "failed_expectations": len(validation.failed),
                "failures": dg.MetadataValue.md(validation.markdown() or "none"),
            },
        },
        REJECTED_SHARE_WITHIN_LIMIT: {
            "passed": share <= max_rejected_share,
            "severity": dg.AssetCheckSeverity.ERROR,
            "description": f"{rejected} of {stored + rejected} records rejected"
            f" ({share:.1%}; limit {max_rejected_share:.1%})",
            "metadata": {
                "rows_stored": stored,
                "rows_rejected": rejected,
                "rejected_share": dg.MetadataValue.float(share),
                "max_rejected_share": dg.MetadataValue.float(max_rejected_share),
            },
        },
    }
