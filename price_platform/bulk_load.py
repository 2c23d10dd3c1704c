"""``price-platform bulk-load``: big Parquet files into ``price_data.raw_sales`` with ``COPY``.

The path for data sizes where row-by-row inserts are too slow: each file is read in
record batches, every batch is checked against the data set description with vectorised
rules (rows that break them go to ``price_data.rejected_rows`` with their reasons), the
good rows get the contract's metadata columns and are streamed to PostgreSQL as CSV
through ``COPY``. One file is one transaction: its partitions' old rows are deleted and
the new ones inserted together, so a failed file leaves the table as it was.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg2 import sql
from psycopg2.extras import execute_values

from price_platform.datasets import DatasetSpec, load_dataset, normalise_column
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.tables import METADATA_COLUMNS, ensure_raw_sales, raw_sales_columns
from price_platform.progress import RowProgress
from price_platform.settings import get_settings
from price_platform.warehouse import connect, platform_server

log = logging.getLogger(__name__)

#: Rows read, checked and copied at a time.
CHUNK_ROWS = 100_000


class BulkLoadError(IngestionError):
    """A file that cannot be loaded, with the reason; nothing of it was written."""


@dataclass
class FileLoad:
    """What one file contributed: rows loaded and rejected per partition."""

    path: Path
    loaded: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rows_loaded(self) -> int:
        return sum(self.loaded.values())

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())


def data_columns(spec: DatasetSpec) -> dict[str, pa.DataType]:
    """The data set's columns of ``raw_sales`` (ingestion's table definition) as Arrow types."""
    return {
        name: pa.float64() if kind == "double precision" else pa.string()
        for name, kind in raw_sales_columns(spec).items()
        if name not in METADATA_COLUMNS
    }


def partition_keys(table: pa.Table, spec: DatasetSpec, fallback: str) -> pa.Array:
    """Each row's partition key: ``YYYY-MM-01`` of its sale month, or ``fallback`` without time.

    Raises :class:`BulkLoadError` when a sale month cannot be read (the whole file is unusable then).
    """
    if spec.time is None:
        return pa.repeat(pa.scalar(fallback), table.num_rows)
    try:
        if spec.time.column:
            stamps = pc.cast(table[spec.time.column], pa.timestamp("s"))
            years, months = pc.year(stamps), pc.month(stamps)
        else:
            years = pc.cast(table[spec.time.year_column], pa.int64())
            months = pc.cast(table[spec.time.month_column], pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise BulkLoadError(f"the sale month cannot be read from {spec.time.columns}: {error}") from error
    if pc.any(pc.or_(pc.less(months, 1), pc.greater(months, 12))).as_py():
        raise BulkLoadError(f"{spec.time.columns[-1]}: not a month (1-12), so the sale month is unknown")
    return pc.binary_join_element_wise(
        pc.utf8_lpad(pc.cast(years, pa.string()), 4, "0"),
        pc.utf8_lpad(pc.cast(months, pa.string()), 2, "0"),
        "01",
        "-",
    )


def row_problems(table: pa.Table, spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Reason -> boolean mask of the rows it applies to (vectorised; empty when all is well)."""
    problems: dict[str, np.ndarray] = {}

    def note(reason: str, mask: pa.ChunkedArray | pa.Array) -> None:
        values = np.asarray(pc.fill_null(mask, False))
        if values.any():
            problems[reason] = values

    for name, rule in spec.numeric.items():
        column = table[name]
        if not rule.nullable:
            note(f"{name} is missing", pc.is_null(column, nan_is_null=True))
        if rule.min is not None:
            note(f"{name} below {rule.min:g}", pc.less(column, rule.min))
        if rule.max is not None:
            note(f"{name} above {rule.max:g}", pc.greater(column, rule.max))
        if rule.integer and not pa.types.is_integer(column.type):
            note(f"{name} not a whole number", pc.not_equal(pc.floor(column), column))
    for name, rule in spec.categorical.items():
        column = table[name]
        if not rule.nullable:
            note(f"{name} is missing", pc.is_null(column))
        if rule.allowed is not None:
            unknown = pc.and_(pc.invert(pc.is_in(column, pa.array(rule.allowed))), pc.is_valid(column))
            note(f"{name} not an allowed category", unknown)
    if spec.id_column:
        note(f"{spec.id_column} is missing", pc.is_null(table[spec.id_column]))
    target = table[spec.target]
    note(f"{spec.target} is missing", pc.is_null(target, nan_is_null=True))
    note(f"{spec.target} not above {spec.target_min:g}", pc.less_equal(target, spec.target_min))
    return problems


def _read_schema(path: Path, spec: DatasetSpec) -> dict[str, str]:
    """Normalised column name -> the file's own name, for the columns the data set needs."""
    if not path.is_file():
        raise BulkLoadError(f"{path}: no such file")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise BulkLoadError(f"{path}: not a readable Parquet file: {error}") from error
    by_name = {normalise_column(name): name for name in schema.names}
    missing = [name for name in spec.columns if name not in by_name]
    if missing:
        raise BulkLoadError(f"{path}: missing columns {missing}")
    return {name: by_name[name] for name in spec.columns}


def _typed(batch: pa.RecordBatch, names: dict[str, str], spec: DatasetSpec) -> pa.Table:
    """The batch under normalised names with the types of ``raw_sales`` (numbers, stripped text).

    Integer columns stay integers (PostgreSQL reads them into ``double precision`` the same,
    and they are cheaper to check and to write as CSV); other numbers become float64.
    """
    columns = {}
    for name, target in data_columns(spec).items():
        column = batch.column(batch.schema.get_field_index(names[name]))
        kind = "a number" if target == pa.float64() else "text"
        try:
            if target == pa.string():
                columns[name] = _text(column)
            elif pa.types.is_integer(column.type):
                columns[name] = column
            else:
                columns[name] = pc.cast(column, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise BulkLoadError(f"column {name!r} cannot be read as {kind}: {error}") from error
    return pa.table(columns)


def _text(column: pa.Array) -> pa.Array:
    """Text without surrounding blanks, empty meaning missing (as ingestion reads it).

    Dictionary-encoded columns (categories, read so from Parquet) are trimmed in their
    dictionary only and stay encoded: the CSV writer expands them.
    """
    if pa.types.is_dictionary(column.type) and pa.types.is_string(column.type.value_type):
        dictionary = pc.utf8_trim_whitespace(column.dictionary)
        if not pc.any(pc.equal(dictionary, "")).as_py():
            return pa.DictionaryArray.from_arrays(column.indices, dictionary)
        column = pa.DictionaryArray.from_arrays(column.indices, dictionary).dictionary_decode()
    else:
        column = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _copy(cursor, table: pa.Table, columns: list[str]) -> None:  # noqa: ANN001
    """``table`` appended to ``raw_sales`` with ``COPY ... FROM STDIN (FORMAT csv)``.

    Text is written unquoted (less to write and for PostgreSQL to parse; missing text is
    already null, so an empty field means null as it should); a batch with a value that
    needs quotes (a comma, quote or line break in it) is written quoted instead.
    """
    buffer = io.BytesIO()
    try:
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    except pa.ArrowInvalid:
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    buffer.seek(0)
    statement = sql.SQL("copy price_data.raw_sales ({}) from stdin with (format csv)").format(
        sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    cursor.copy_expert(statement.as_string(cursor), buffer)


def load_file(
    cursor,  # noqa: ANN001
    path: Path,
    spec: DatasetSpec,
    *,
    chunk_rows: int = CHUNK_ROWS,
    max_rejected_share: float = 0.05,
    progress: RowProgress | None = None,
) -> FileLoad:
    """Load one landed Parquet file inside the caller's transaction (see the module docstring).

    As in ingestion's partition replace, the file's earlier rows (accepted and rejected) in
    each partition it touches are deleted first.
    """
    names = _read_schema(path, spec)
    schema = pq.read_schema(path)
    categories = [names[c] for c in spec.categorical if pa.types.is_string(schema.field(names[c]).type)]
    parquet = pq.ParquetFile(path, read_dictionary=categories)
    keys, duplicates = _scan(parquet, names, spec, path)
    load_ids = {key: str(uuid.uuid4()) for key in keys}
    for key in keys:
        cursor.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"raw_sales/{key}",))
    cursor.execute(
        "delete from price_data.raw_sales where _partition_key = any(%s) and _source = 'landing' and _source_file = %s",
        (keys, str(path)),
    )
    cursor.execute(
        "delete from price_data.rejected_rows r using price_data.loads l where r.load_id = l.load_id"
        " and r.partition_key = any(%s) and l.source = 'landing' and r.source_file = %s",
        (keys, str(path)),
    )
    result = FileLoad(path=path, loaded=dict.fromkeys(keys, 0), rejected=dict.fromkeys(keys, 0))
    table_columns = ["_load_id", "_source", "_source_file", "_row_number", "_partition_key", *data_columns(spec)]
    first_row = 1
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(dict.fromkeys(names.values()))):
        typed = _typed(batch, names, spec)
        keys_here = partition_keys(typed, spec, path.stem)
        rows = np.arange(first_row, first_row + typed.num_rows, dtype="int32")
        problems = row_problems(typed, spec)
        repeated = duplicates[first_row - 1 : first_row - 1 + typed.num_rows]
        if repeated.any():
            problems[f"{spec.id_column} repeats an earlier row's"] = repeated
        first_row += typed.num_rows
        bad = np.logical_or.reduce(list(problems.values())) if problems else np.zeros(typed.num_rows, dtype=bool)
        if bad.any():
            _reject(cursor, typed, keys_here, rows, bad, problems, load_ids, path, result)
            keep = pa.array(~bad)
            typed, keys_here, rows = typed.filter(keep), keys_here.filter(keep), rows[~bad]
        for entry in pc.value_counts(keys_here).to_pylist():
            result.loaded[entry["values"]] += entry["counts"]
        metadata = [
            pc.take(pa.array(list(load_ids.values())), pc.index_in(keys_here, pa.array(list(load_ids)))),
            pa.repeat(pa.scalar("landing"), typed.num_rows),
            pa.repeat(pa.scalar(str(path)), typed.num_rows),
            pa.array(rows),
            keys_here,
        ]
        _copy(cursor, pa.Table.from_arrays([*metadata, *typed.columns], names=table_columns), table_columns)
        if progress is not None:
            progress.update(batch.num_rows)
    total = result.rows_loaded + result.rows_rejected
    if total and result.rows_rejected / total > max_rejected_share:
        raise BulkLoadError(
            f"{path}: {result.rows_rejected} of {total} rows break the data set's rules "
            f"(more than {max_rejected_share:.0%}); nothing was loaded"
        )
    execute_values(
        cursor,
        "insert into price_data.loads (load_id, partition_key, source, source_file, rows_loaded, rows_rejected) values %s",
        [(load_ids[key], key, "landing", str(path), result.loaded[key], result.rejected[key]) for key in keys],
    )
    return result


def _scan(parquet: pq.ParquetFile, names: dict[str, str], spec: DatasetSpec, path: Path) -> tuple[list[str], np.ndarray]:
    """First pass over the time and id columns: the partitions the file touches and which rows repeat an id."""
    wanted = [*(spec.time.columns if spec.time else []), *([spec.id_column] if spec.id_column else [])]
    keys: set[str] = set()
    ids: list[np.ndarray] = []
    rows = 0
    for batch in parquet.iter_batches(columns=[names[c] for c in wanted] or [names[spec.target]]):
        table = pa.table({name: batch.column(batch.schema.get_field_index(names[name])) for name in wanted})
        try:
            here = partition_keys(table, spec, path.stem)
        except BulkLoadError as error:
            raise BulkLoadError(f"{path}: {error}") from error
        if here.null_count:
            raise BulkLoadError(f"{path}: rows without a sale month ({', '.join(spec.time.columns)} missing)")  # type: ignore[union-attr]
        keys.update(pc.unique(here).to_pylist())
        if spec.id_column:
            ids.append(_id_values(table[spec.id_column]))
        rows += batch.num_rows
    if rows == 0:
        raise BulkLoadError(f"{path}: no rows; the file has columns but no records")
    if not ids:
        return sorted(keys), np.zeros(rows, dtype=bool)
    return sorted(keys), pd.Series(np.concatenate(ids)).duplicated(keep="first").to_numpy()


def _id_values(column: pa.Array) -> np.ndarray:
    """Record ids for the duplicate check: integers as int64 (fast to hash), anything else as text.

    Missing ids are equal to each other here, as missing text ids are (those rows are rejected
    for the missing id anyway).
    """
    if pa.types.is_integer(column.type):
        return pc.fill_null(pc.cast(column, pa.int64()), np.iinfo(np.int64).min).to_numpy()
    return np.asarray(pc.cast(column, pa.string()).to_numpy(zero_copy_only=False), dtype=object)


def _reject(cursor, typed, keys, rows, bad, problems, load_ids, path, result) -> None:  # noqa: ANN001
    """Write the bad rows of a batch with their reasons to ``price_data.rejected_rows``."""
    where = np.flatnonzero(bad)
    records = typed.take(pa.array(where)).to_pylist()
    row_keys = keys.take(pa.array(where)).to_pylist()
    values = []
    for position, record, key in zip(where, records, row_keys, strict=True):
        reasons = [reason for reason, mask in problems.items() if mask[position]]
        values.append((load_ids[key], key, str(path), int(rows[position]), json.dumps(record, default=str), reasons))
        result.rejected[key] += 1
    execute_values(
        cursor,
        "insert into price_data.rejected_rows (load_id, partition_key, source_file, row_number, record, reasons) values %s",
        values,
    )


def bulk_load(
    dsn: str,
    spec: DatasetSpec,
    paths: Iterable[Path],
    *,
    chunk_rows: int = CHUNK_ROWS,
    max_rejected_share: float = 0.05,
    show_progress: bool = True,
    workers: int = 2,
) -> list[FileLoad]:
    """Load Parquet files, one transaction each, ``workers`` at a time, with one progress bar over all rows.

    Arrow releases the GIL while it decodes Parquet and writes CSV and PostgreSQL parses
    ``COPY`` in its own process, so two workers keep two cores busy.
    """
    paths = sorted(paths)
    for path in paths:  # every file readable with the data set's columns before anything is written
        _read_schema(path, spec)
    total = sum(pq.ParquetFile(path).metadata.num_rows for path in paths)
    with connect(dsn) as connection, connection.cursor() as cursor:
        ensure_raw_sales(cursor, spec)

    def one(path: Path) -> FileLoad:
        with connect(dsn) as connection, connection.cursor() as cursor:
            return load_file(
                cursor, path, spec, chunk_rows=chunk_rows,
                max_rejected_share=max_rejected_share, progress=progress,
            )

    with (
        RowProgress(total, "COPY raw_sales", disable=not show_progress) as progress,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        loads = list(pool.map(one, paths))
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("analyze price_data.raw_sales")  # fresh statistics for the features' query plans
    return loads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", type=Path, help="Parquet files (default: every *.parquet in the landing folder)")
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    parser.add_argument("--workers", type=int, default=2, help="files loaded at the same time")
    parser.add_argument("--no-progress", action="store_true", help="do not report rows loaded, rate and ETA")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    spec = load_dataset(settings.dataset)
    paths = args.paths or sorted(settings.landing.glob("*.parquet"))
    if not paths:
        print(f"no Parquet files to load in {settings.landing}")
        return 1
    loads = bulk_load(
        platform_server(settings).dsn(), spec, paths, chunk_rows=args.chunk_rows,
        max_rejected_share=settings.max_rejected_share, show_progress=not args.no_progress,
        workers=args.workers,
    )
    loaded = sum(load.rows_loaded for load in loads)
    rejected = sum(load.rows_rejected for load in loads)
    print(f"loaded {loaded:,} rows from {len(loads)} files into price_data.raw_sales ({rejected:,} rejected)")
    return 0
