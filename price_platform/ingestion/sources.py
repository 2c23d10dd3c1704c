"""Readers for the three sources of sales: a data set's own file, landed CSV/Parquet files, a SQL query.

Every reader returns a :class:`SourceFrame` whose columns are normalised
(:func:`price_platform.datasets.normalise_column`) and whose values are as the source holds
them; typing the values is :mod:`price_platform.ingestion.records`' job.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from price_platform.datasets import DatasetSpec, normalise_column
from price_platform.ingestion.errors import IngestionError

SourceKind = Literal["bundled", "landing", "sql"]

#: File name endings the landing folder accepts.
FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")


@dataclass(frozen=True)
class SourceFrame:
    """Records read from one source, with normalised column names."""

    kind: SourceKind
    name: str
    frame: pd.DataFrame


def is_sales_file(path: Path) -> bool:
    """Whether a file has one of the endings the landing folder accepts."""
    return path.name.lower().endswith(FILE_SUFFIXES)


def read_source(spec: DatasetSpec, source_file: Path | None = None) -> SourceFrame:
    """A landed file when one is given, else the data set's own source (file or query)."""
    if source_file is not None:
        return read_file(source_file, kind="landing")
    if spec.source.query:
        if not spec.source.url:
            raise IngestionError(f"data set {spec.name!r}: source.query needs source.url")
        return read_query(spec.source.query, spec.source.url)
    if spec.source.path is None:
        raise IngestionError(f"data set {spec.name!r} has no source: give source.path or source.query and source.url")
    return read_file(spec.source.path, kind="bundled")


def read_file(path: Path, kind: SourceKind = "landing") -> SourceFrame:
    """A CSV (optionally gzipped) or Parquet file; raise :class:`IngestionError` naming what is wrong where."""
    if not path.is_file():
        raise IngestionError(f"{path}: no such file")
    if path.name.lower().endswith(".parquet"):
        frame = _read_parquet(path)
    elif path.name.lower().endswith((".csv", ".csv.gz")):
        frame = _read_csv(path)
    else:
        raise IngestionError(f"{path}: not a sales file; expected one ending in {', '.join(FILE_SUFFIXES)}")
    return SourceFrame(kind=kind, name=str(path), frame=_normalised(frame, str(path)))


def read_query(query: str, url: str) -> SourceFrame:
    """The rows a SQL query returns on another PostgreSQL database."""
    sa_url = make_url(url)
    if sa_url.drivername in ("postgresql", "postgres"):
        sa_url = sa_url.set(drivername="postgresql+psycopg2")
    name = f"sql query on {sa_url.set(drivername='postgresql').render_as_string(hide_password=True)}"
    engine = sa.create_engine(sa_url)
    try:
        with engine.connect() as connection:
            frame = pd.read_sql_query(sa.text(query), connection)
    except sa.exc.SQLAlchemyError as error:
        raise IngestionError(f"{name}: the query failed: {error.__cause__ or error}") from error
    finally:
        engine.dispose()
    return SourceFrame(kind="sql", name=name, frame=_normalised(frame, name))


def _read_csv(path: Path) -> pd.DataFrame:
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise IngestionError(f"{path}: not a readable gzip file: {error}") from error
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise IngestionError(_encoding_message(path, data, error)) from error
    if not text.strip():
        raise IngestionError(f"{path}: the file is empty (no header, no rows)")
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=False)
    except (pd.errors.ParserError, ValueError) as error:
        raise IngestionError(f"{path}: not a readable CSV file: {error}") from error


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise IngestionError(f"{path}: not a readable Parquet file: {error}") from error


def _encoding_message(path: Path, data: bytes, error: UnicodeDecodeError) -> str:
    """Name the row and column of the first byte that is not UTF-8."""
    line_start = data.rfind(b"\n", 0, error.start) + 1
    line_end = data.find(b"\n", error.start)
    line_number = data.count(b"\n", 0, error.start) + 1
    header = next(csv.reader([data.split(b"\n", 1)[0].decode("utf-8", errors="replace")]), [])
    line = data[line_start : line_end if line_end >= 0 else len(data)].decode("utf-8", errors="replace")
    fields = next(csv.reader([line]), [])
    column = next((header[i] for i, value in enumerate(fields) if "\ufffd" in value and i < len(header)), "?")
    where = "header" if line_number == 1 else f"row {line_number - 1}"
    return (
        f"{path}: {where}, column {column!r}: byte 0x{data[error.start]:02x} is not valid UTF-8"
        f" (line {line_number}); save the file as UTF-8"
    )


def _normalised(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The frame with lower snake case column names; two columns that normalise alike are an error."""
    names = [normalise_column(str(column)) for column in frame.columns]
    seen: dict[str, str] = {}
    for original, normalised in zip(frame.columns, names, strict=True):
        if normalised in seen:
            raise IngestionError(
                f"{name}: header: columns {seen[normalised]!r} and {original!r} both mean {normalised!r}"
            )
        seen[normalised] = str(original)
    return frame.set_axis(names, axis="columns")
