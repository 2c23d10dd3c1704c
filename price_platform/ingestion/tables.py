"""The ``price_data.raw_sales`` table, created from the data set description, and the partition writes.

The table's shape is the contract in ``docs/architecture.md``: metadata columns first, then
every column of the data set typed from its description.
"""

from __future__ import annotations

import io
import math
import uuid
from dataclasses import dataclass

import pandas as pd
import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import Json, execute_values

from price_platform.datasets import DatasetSpec
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.records import PARTITION_KEY, ROW_NUMBER

RAW_SALES = "raw_sales"
SCHEMA = "price_data"

#: Metadata columns of ``raw_sales`` and their SQL types.
METADATA_COLUMNS = {
    "_load_id": "uuid not null",
    "_source": "text not null",
    "_source_file": "text",
    "_row_number": "integer not null",
    "_partition_key": "text not null",
    "_ingested_at": "timestamptz not null default now()",
}
_SQL_TYPES = {"number": "double precision", "text": "text"}
#: SQL type -> how ``information_schema.columns`` spells it.
_CATALOG_TYPES = {
    "double precision": "double precision",
    "text": "text",
    "uuid": "uuid",
    "integer": "integer",
    "timestamptz": "timestamp with time zone",
}
_CREATE_LOCK = 7_310_002


@dataclass(frozen=True)
class PartitionLoad:
    """One load of one source into one partition: what to write and where it came from."""

    load_id: uuid.UUID
    partition_key: str
    source_kind: str
    source_name: str
    accepted: pd.DataFrame
    rejected: pd.DataFrame
    reasons: dict[int, list[str]]


def raw_sales_columns(spec: DatasetSpec) -> dict[str, str]:
    """Column name -> SQL type of ``raw_sales`` for a data set."""
    data = {column: _SQL_TYPES[kind] for column, kind in spec.column_kinds.items()}
    return {**METADATA_COLUMNS, **data}


def ensure_raw_sales(cursor: psycopg2.extensions.cursor, spec: DatasetSpec) -> None:
    """Create ``raw_sales`` for the data set, or check that the existing table has its columns and types."""
    cursor.execute("select pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
    columns = raw_sales_columns(spec)
    definitions = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(sql_type)) for name, sql_type in columns.items()
    )
    table = sql.Identifier(SCHEMA, RAW_SALES)
    cursor.execute(sql.SQL("create table if not exists {} ({})").format(table, definitions))
    cursor.execute(
        sql.SQL("create index if not exists raw_sales_partition on {} (_partition_key, _source)").format(table)
    )
    cursor.execute(
        "select column_name, data_type from information_schema.columns where table_schema = %s and table_name = %s",
        (SCHEMA, RAW_SALES),
    )
    existing = dict(cursor.fetchall())
    wrong = {
        name: existing.get(name, "missing")
        for name, sql_type in columns.items()
        if existing.get(name) != next(v for k, v in _CATALOG_TYPES.items() if sql_type.startswith(k))
    }
    if wrong:
        raise IngestionError(
            f"{SCHEMA}.{RAW_SALES} does not fit data set {spec.name!r}: columns missing or of another type:"
            f" {wrong}; it was created for another data set (use another database)"
        )


def replace_partition(cursor: psycopg2.extensions.cursor, spec: DatasetSpec, load: PartitionLoad) -> None:
    """Swap the partition's rows from this source (accepted and rejected) for the new ones and record the load.

    Rows of a landed file replace that file's earlier rows; rows of the data set's own
    source replace that source's. Run it inside one transaction.
    """
    replaces_file = load.source_kind == "landing"
    cursor.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"raw_sales/{load.partition_key}",))
    cursor.execute(
        sql.SQL(
            "delete from {} where _partition_key = %s and _source = %s and (not %s or _source_file = %s)"
        ).format(sql.Identifier(SCHEMA, RAW_SALES)),
        (load.partition_key, load.source_kind, replaces_file, load.source_name),
    )
    cursor.execute(
        "delete from price_data.rejected_rows r using price_data.loads l"
        " where r.load_id = l.load_id and r.partition_key = %s and l.source = %s and (not %s or r.source_file = %s)",
        (load.partition_key, load.source_kind, replaces_file, load.source_name),
    )
    _copy_rows(cursor, spec, load)
    execute_values(
        cursor,
        "insert into price_data.rejected_rows (load_id, partition_key, source_file, row_number, record, reasons)"
        " values %s",
        [
            (str(load.load_id), load.partition_key, load.source_name, int(row[ROW_NUMBER]),
             Json(_json_record(spec, row)), load.reasons[int(row[ROW_NUMBER])])
            for _, row in load.rejected.iterrows()
        ],
    )
    cursor.execute(
        "insert into price_data.loads (load_id, partition_key, source, source_file, rows_loaded, rows_rejected)"
        " values (%s, %s, %s, %s, %s, %s)",
        (str(load.load_id), load.partition_key, load.source_kind, load.source_name,
         len(load.accepted), len(load.rejected)),
    )


def _copy_rows(cursor: psycopg2.extensions.cursor, spec: DatasetSpec, load: PartitionLoad) -> None:
    rows = load.accepted[[ROW_NUMBER, PARTITION_KEY, *spec.columns]].copy()
    rows.insert(0, "_load_id", str(load.load_id))
    rows.insert(1, "_source", load.source_kind)
    rows.insert(2, "_source_file", load.source_name)
    buffer = io.StringIO()
    rows.to_csv(buffer, index=False, header=False)
    buffer.seek(0)
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in rows.columns)
    statement = sql.SQL("copy {} ({}) from stdin with (format csv)").format(
        sql.Identifier(SCHEMA, RAW_SALES), columns
    )
    cursor.copy_expert(statement.as_string(cursor), buffer)


def _json_record(spec: DatasetSpec, row: pd.Series) -> dict[str, object]:
    record: dict[str, object] = {}
    for column in spec.columns:
        value = row[column]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            record[column] = None
        elif isinstance(value, float) and math.isinf(value):
            record[column] = str(value)
        else:
            record[column] = value.item() if hasattr(value, "item") else value
    return record


def read_partition(connection: psycopg2.extensions.connection, spec: DatasetSpec, partition_key: str) -> pd.DataFrame:
    """The records stored in one partition, typed as on ingestion (numbers as floats), with row numbers."""
    kinds = spec.column_kinds
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in [ROW_NUMBER, *kinds])
    query = sql.SQL("select {} from {} where _partition_key = %s order by _source, _source_file, _row_number").format(
        columns, sql.Identifier(SCHEMA, RAW_SALES)
    )
    with connection.cursor() as cursor:
        cursor.execute(query, (partition_key,))
        frame = pd.DataFrame(cursor.fetchall(), columns=[ROW_NUMBER, *kinds])
    for column, kind in kinds.items():
        frame[column] = frame[column].astype("float64") if kind == "number" else frame[column].astype(object)
    return frame


def partition_counts(connection: psycopg2.extensions.connection, partition_key: str) -> tuple[int, int]:
    """(stored rows, rejected rows) of one partition."""
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("select count(*) from {} where _partition_key = %s").format(sql.Identifier(SCHEMA, RAW_SALES)),
            (partition_key,),
        )
        stored = cursor.fetchone()[0]
        cursor.execute("select count(*) from price_data.rejected_rows where partition_key = %s", (partition_key,))
        rejected = cursor.fetchone()[0]
    return stored, rejected
