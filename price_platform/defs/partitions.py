"""The partitioning of sales data, defined once and reused by assets, checks, dbt and schedules.

A data set with a time column is partitioned by calendar month (``YYYY-MM``). One without
is partitioned by arrival batch: a dynamic partition per landed file or load.
"""

from __future__ import annotations

from datetime import date

import dagster as dg

from price_platform.datasets import DatasetSpec

#: Name of the dynamic partitions of data sets without a time column.
ARRIVAL_BATCHES = "arrival_batches"


def sales_partitions(spec: DatasetSpec) -> dg.PartitionsDefinition:
    """Monthly partitions over the data set's months, or arrival batches when it has no time."""
    if spec.time is None:
        return dg.DynamicPartitionsDefinition(name=ARRIVAL_BATCHES)
    start = f"{spec.time.start}-01"
    end = None
    if spec.time.end is not None:
        year, month = (int(part) for part in spec.time.end.split("-"))
        end = date(year + month // 12, month % 12 + 1, 1).isoformat()
    return dg.MonthlyPartitionsDefinition(start_date=start, end_date=end, fmt="%Y-%m-%d")

