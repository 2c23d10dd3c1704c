"""Readers for the three sources of sales: a data set's own file, landed CSV/Parquet files, a SQL query.

Every reader returns a :class:`SourceFrame` whose columns are normalised
(:func:`price_platform.datasets.normalise_column`) and whose values are as the source holds
them; typing the values is :mod:`price_platform.ingestion.records`' job.
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from price_platform.datasets import DatasetSpec, normalise_column
from price_platform.ingestion.errors import IngestionError
from price_platform.settings import Settings, get_settings

SourceKind = Literal["bundled", "landing", "sql"]

#: File name endings the landing folder accepts.
FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")


@dataclass(frozen=True)
class SourceFrame:
    """Records read from one source, with normalised column names."""

    kind: SourceKind
    name: str
    frame: pd.DataFrame


@dataclass(frozen=True)
class FileLimits:
    """How large a landed file may be: landed files are untrusted, and one must not exhaust memory or disk.

    ``max_file_bytes`` bounds the file as it lies on disk (checked before a byte is read);
    ``max_decompressed_bytes`` what it holds once inflated (checked while a .csv.gz is inflated,
    and from a Parquet file's footer before its row groups are).
    """

    max_file_bytes: int
    max_decompressed_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FileLimits:
        """The limits ``PRICE_PLATFORM_LANDING_MAX_FILE_BYTES`` and ``..._MAX_DECOMPRESSED_BYTES`` set."""
        return cls(settings.landing_max_file_bytes, settings.landing_max_decompressed_bytes)


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


def read_file(path: Path, kind: SourceKind = "landing", limits: FileLimits | None = None) -> SourceFrame:
    """A CSV (optionally gzipped) or Parquet file; raise :class:`IngestionError` naming what is wrong where.

    A landed file must be a regular file, not a symbolic link (links are not followed), within
    ``limits`` (default: the settings'); the data set's own file is trusted and read whole.
    """
    if not is_sales_file(path):
        raise IngestionError(f"{path}: not a sales file; expected one ending in {', '.join(FILE_SUFFIXES)}")
    cap: int | None = None
    if kind == "landing":
        limits = limits or FileLimits.from_settings(get_settings())
        handle, cap = _open_landed(path, limits), limits.max_decompressed_bytes
    elif path.is_file():
        handle = path.open("rb")
    else:
        raise IngestionError(f"{path}: no such file")
    with handle:
        parquet = path.name.lower().endswith(".parquet")
        frame = _read_parquet(handle, path, cap) if parquet else _read_csv(handle, path, cap)
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


def _open_landed(path: Path, limits: FileLimits) -> BinaryIO:
    """The landed file opened for reading, once it is known to be a regular file no larger than the cap.

    ``O_NOFOLLOW`` refuses a symbolic link at the moment of opening (no check-then-open race);
    ``O_NONBLOCK`` keeps a named pipe from blocking the reader; the size is the opened file's.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError as error:
        raise IngestionError(f"{path}: no such file") from error
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise IngestionError(f"{path}: a symbolic link; landed files are read only as regular files") from error
        raise IngestionError(f"{path}: cannot be opened: {error.strerror}") from error
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limits.max_file_bytes:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IngestionError(f"{path}: not a regular file")
        raise IngestionError(
            f"{path}: {info.st_size} bytes, over the landing-file cap of {limits.max_file_bytes} bytes"
            " (PRICE_PLATFORM_LANDING_MAX_FILE_BYTES); the file was not read"
        )
    return os.fdopen(fd, "rb")


def _decompressed_cap_message(path: Path, cap: int) -> str:
    return (
        f"{path}: holds more than {cap} bytes once decompressed, over the landing-file cap"
        " (PRICE_PLATFORM_LANDING_MAX_DECOMPRESSED_BYTES); reading stopped there and nothing was loaded"
    )


def _read_csv(handle: BinaryIO, path: Path, cap: int | None) -> pd.DataFrame:
    """The CSV's cells as text; with ``cap``, at most ``cap`` bytes are inflated before the file is refused."""
    stream: BinaryIO = gzip.GzipFile(fileobj=handle, mode="rb") if path.name.lower().endswith(".gz") else handle
    try:
        data = stream.read() if cap is None else stream.read(cap + 1)
    except (OSError, EOFError) as error:
        raise IngestionError(f"{path}: not a readable gzip file: {error}") from error
    if cap is not None and len(data) > cap:
        raise IngestionError(_decompressed_cap_message(path, cap))
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


def _read_parquet(handle: BinaryIO, path: Path, cap: int | None) -> pd.DataFrame:
    """The Parquet file's table; with ``cap``, refused when its footer says the row groups inflate past it."""
    if cap is not None and _parquet_inflated_bytes(handle, path) > cap:
        raise IngestionError(_decompressed_cap_message(path, cap))
    try:
        return pd.read_parquet(handle)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise IngestionError(f"{path}: not a readable Parquet file: {error}") from error


def _parquet_inflated_bytes(handle: BinaryIO, path: Path) -> int:
    """Bytes of the file's row groups once uncompressed, as its footer gives them; the handle is rewound."""
    try:
        metadata = pq.ParquetFile(handle).metadata
    except (pa.ArrowException, OSError, ValueError) as error:
        raise IngestionError(f"{path}: not a readable Parquet file: {error}") from error
    handle.seek(0)
    return sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))


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
