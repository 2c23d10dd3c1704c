"""Loading one partition: read the source, type and validate its records, replace the partition in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from price_platform.datasets import DatasetSpec
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.records import PARTITION_KEY, ROW_NUMBER, typed_records
from price_platform.ingestion.sources import SourceFrame, read_source
from price_platform.ingestion.tables import PartitionLoad, ensure_raw_sales, replace_partition
from price_platform.validation.validate import Validation, validate_records
from price_platform.warehouse import connect


@dataclass(frozen=True)
class LoadSummary:
    """What one load did to one partition."""

    load_id: uuid.UUID
    partition_key: str
    source_kind: str
    source_name: str
    rows_loaded: int
    rows_rejected: int
    validation: Validation
    preview: pd.DataFrame
    rejected_preview: pd.DataFrame

    @property
    def rejected_share(self) -> float:
        total = self.rows_loaded + self.rows_rejected
        return self.rows_rejected / total if total else 0.0


def ingest_partition(dsn: str, spec: DatasetSpec, partition_key: str, source_file: Path | None = None) -> LoadSummary:
    """Load a partition's records from a landed file, or else from the data set's own source.

    The partition's earlier rows from the same source (accepted and rejected) are replaced
    in the same transaction that inserts the new ones; a source that cannot be read
    raises :class:`IngestionError` before anything is written.
    """
    (summary,) = ingest_partitions(dsn, spec, [partition_key], source_file)
    return summary


def ingest_partitions(
    dsn: str, spec: DatasetSpec, partition_keys: list[str], source_file: Path | None = None
) -> list[LoadSummary]:
    """Load several partitions from one read of the source and one validation of their records.

    A backfill of many months reads, types and validates the source once instead of once a
    month (Great Expectations' run is most of a partition's cost). Each partition is then
    replaced in a transaction of its own, in order, as :func:`ingest_partition` does; a source
    that cannot be read, or a landed file without rows for one of the partitions, raises
    :class:`IngestionError` before anything is written.
    """
    if spec.time is None and len(partition_keys) != 1:
        raise IngestionError(f"data set {spec.name!r} has no time: load one arrival batch at a time")
    source = read_source(spec, source_file)
    records = typed_records(spec, source, partition_keys[0] if spec.time is None else None)
    records = records[records[PARTITION_KEY].isin(partition_keys)].reset_index(drop=True)
    present = set(records[PARTITION_KEY])
    missing = [key for key in partition_keys if key not in present]
    if missing and source.kind == "landing":
        raise IngestionError(f"{source.name}: no rows for partition {', '.join(missing)}")
    validation = validate_records(spec, records[spec.columns], row_ids=records[ROW_NUMBER])
    with connect(dsn) as connection, connection.cursor() as cursor:
        ensure_raw_sales(cursor, spec)
    summaries = []
    for key in partition_keys:
        part = records[records[PARTITION_KEY] == key].reset_index(drop=True)
        summaries.append(_replace(dsn, spec, source, key, part, validation.restricted_to(part[ROW_NUMBER])))
    return summaries


def _replace(
    dsn: str, spec: DatasetSpec, source: SourceFrame, partition_key: str, records: pd.DataFrame, validation: Validation
) -> LoadSummary:
    """Replace one partition's rows from ``source`` with ``records``, bad rows set aside, in one transaction."""
    bad = records[ROW_NUMBER].isin(list(validation.reasons))
    load = PartitionLoad(
        load_id=uuid.uuid4(),
        partition_key=partition_key,
        source_kind=source.kind,
        source_name=source.name,
        accepted=records[~bad],
        rejected=records[bad],
        reasons=validation.reasons,
    )
    with connect(dsn) as connection, connection.cursor() as cursor:
        replace_partition(cursor, spec, load)
    shown = [ROW_NUMBER, *dict.fromkeys(c for c in _key_columns(spec) if c in spec.columns)]
    rejected_preview = load.rejected[shown].head(10).copy()
    rejected_preview["reasons"] = ["; ".join(validation.reasons[int(n)]) for n in rejected_preview[ROW_NUMBER]]
    return LoadSummary(
        load_id=load.load_id,
        partition_key=partition_key,
        source_kind=source.kind,
        source_name=source.name,
        rows_loaded=len(load.accepted),
        rows_rejected=len(load.rejected),
        validation=validation,
        preview=load.accepted[shown].head(5),
        rejected_preview=rejected_preview,
    )


def _key_columns(spec: DatasetSpec) -> list[str]:
    """The columns a person scans first: id, time, segments, size and price."""
    time_columns = spec.time.columns if spec.time else []
    return [*([spec.id_column] if spec.id_column else []), *time_columns, *spec.segments,
            *([spec.area_column] if spec.area_column else []), spec.target]
