"""Typing a source's records as the data set description says, and placing each in its partition.

A record's row number counts data rows from 1 (the header is not a row). Structural faults
(missing columns, no rows, a value that is not a number, a record without a sale month)
make the whole source unusable and raise :class:`IngestionError`; values of the right type
that break the data set's rules are left to validation, which sets those rows aside.
"""

from __future__ import annotations

import pandas as pd

from price_platform.datasets import DatasetSpec, integer_code, month_key
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.sources import SourceFrame

#: Column holding each record's 1-based row number in its source.
ROW_NUMBER = "_row_number"
#: Column holding each record's partition key.
PARTITION_KEY = "_partition_key"

_MAX_LISTED = 5


def typed_records(spec: DatasetSpec, source: SourceFrame, partition_key: str | None = None) -> pd.DataFrame:
    """The source's records as the spec's columns (floats and stripped strings), plus row number and partition key.

    ``partition_key`` is every record's partition for a data set without time; with time,
    each record's month decides it.
    """
    frame = regrouped(spec, source.frame.rename(columns=spec.rename), source.name)
    missing = [column for column in spec.columns if column not in frame.columns]
    if missing:
        raise IngestionError(f"{source.name}: header: missing columns {missing} (row 0 is the header)")
    if frame.empty:
        raise IngestionError(f"{source.name}: row 1: no rows; the file has a header but no records")
    records = pd.DataFrame(index=frame.index)
    records[ROW_NUMBER] = range(1, len(frame) + 1)
    codes = {name for name, rule in spec.categorical.items() if rule.codes == "integer"}
    for column, kind in spec.column_kinds.items():
        if kind == "text" and column in codes:
            records[column] = _codes(frame[column], column, source.name, records[ROW_NUMBER])
        elif kind == "text":
            records[column] = _text(frame[column])
        else:
            records[column] = _number(frame[column], column, source.name, records[ROW_NUMBER])
    if spec.time is None:
        if partition_key is None:
            raise IngestionError(f"{source.name}: a data set without time needs the arrival batch's partition key")
        records[PARTITION_KEY] = partition_key
    else:
        records[PARTITION_KEY] = _months(spec, frame, source.name, records[ROW_NUMBER])
    return records.reset_index(drop=True)


def regrouped(spec: DatasetSpec, frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` with each one-hot group of the description folded into one categorical column.

    A row's value is the name of its group column holding 1; none is missing, two or more is a
    fault of the source.
    """
    for group, members in spec.one_hot.items():
        absent = [member for member in members if member not in frame.columns]
        if absent:
            raise IngestionError(f"{name}: header: one-hot group {group!r} misses columns {absent}")
        flags = frame[members].apply(pd.to_numeric, errors="coerce").fillna(0).astype(bool)
        several = flags.sum(axis=1) > 1
        if several.any():
            rows = ", ".join(str(i + 1) for i in several[several].index[:_MAX_LISTED])
            raise IngestionError(f"{name}: one-hot group {group!r}: more than one of {members} set in rows {rows}")
        values = flags.idxmax(axis=1).where(flags.any(axis=1), None)
        frame = frame.drop(columns=members).assign(**{group: values})
    return frame


def _text(values: pd.Series) -> pd.Series:
    """Strings without surrounding blanks; empty means missing."""
    as_text = values.astype("string").str.strip()
    return as_text.astype(object).where(as_text.notna() & (as_text != ""), None)


def _codes(values: pd.Series, column: str, name: str, rows: pd.Series) -> pd.Series:
    """An integer-coded category as the code's text (``3``, ``3.0`` and ``03`` are ``"3"``, as the API makes them).

    A value that is present but no integer is a fault of the source.
    """
    text = _text(values)
    codes = text.map(lambda value: None if value is None else integer_code(value))
    bad = text.notna() & codes.isna()
    if bad.any():
        examples = ", ".join(f"row {rows[i]}: {text[i]!r}" for i in bad[bad].index[:_MAX_LISTED])
        more = f" and {int(bad.sum()) - _MAX_LISTED} more" if bad.sum() > _MAX_LISTED else ""
        raise IngestionError(f"{name}: column {column!r}: values that are not integer codes (codes: integer): {examples}{more}")
    return codes.map(lambda code: None if code is None or pd.isna(code) else str(int(code))).astype(object)


def _number(values: pd.Series, column: str, name: str, rows: pd.Series) -> pd.Series:
    """Floats; a value that is present but not a number is a fault of the source."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = text.notna() & parsed.isna()
    if bad.any():
        examples = ", ".join(f"row {rows[i]}: {text[i]!r}" for i in bad[bad].index[:_MAX_LISTED])
        more = f" and {int(bad.sum()) - _MAX_LISTED} more" if bad.sum() > _MAX_LISTED else ""
        raise IngestionError(f"{name}: column {column!r}: values that are not numbers: {examples}{more}")
    return parsed


def _months(spec: DatasetSpec, frame: pd.DataFrame, name: str, rows: pd.Series) -> pd.Series:
    """Each record's monthly partition key, from its date column or its year and month columns.

    With a year only, a sale's partition is the January of its year.
    """
    time = spec.time
    assert time is not None
    if time.column:
        text = frame[time.column].astype("string").str.strip()
        dates = pd.to_datetime(text, errors="coerce", format="mixed")
        _fail_where(dates.isna(), time.column, "not a date", text, name, rows)
        return pd.Series([month_key(d.year, d.month) for d in dates], index=frame.index)
    year_column, month_column = time.year_column, time.month_column
    assert year_column is not None
    years = _number(frame[year_column], year_column, name, rows)
    _fail_where(years.isna() | (years % 1 != 0), year_column, "not a year", years, name, rows)
    if month_column is None:
        return pd.Series([month_key(int(y), 1) for y in years], index=frame.index)
    months = _number(frame[month_column], month_column, name, rows)
    _fail_where(~months.between(1, 12) | (months % 1 != 0), month_column, "not a month", months, name, rows)
    return pd.Series([month_key(int(y), int(m)) for y, m in zip(years, months, strict=True)], index=frame.index)


def _fail_where(bad: pd.Series, column: str, what: str, values: pd.Series, name: str, rows: pd.Series) -> None:
    if not bad.any():
        return
    examples = ", ".join(f"row {rows[i]}: {values[i]!r}" for i in bad[bad].index[:_MAX_LISTED])
    raise IngestionError(f"{name}: column {column!r}: {what}, so the sale month is unknown: {examples}")
