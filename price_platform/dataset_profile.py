"""``datasets init``: profile a CSV or Parquet table and draft the data set description the user edits.

Each column is typed from its values (numbers, integers, dates, text), then the draft picks a
target (a positive numeric column named like a price, else the most price-like one), a time
(one date column, a sale year and month, a year only, or none), an id (unique in every row),
one-hot groups (0/1 columns sharing a prefix, never two set in a row, folded back into one
categorical) and renames for headers that are not valid column names. Features that are a
near-exact function of the target (a leak, such as its log) and columns with nothing to learn
are written commented out with the reason, so the user sees what was left out and why.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml

from price_platform.datasets import COLUMN_NAME, DatasetError, normalise_column
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.sources import read_file
from price_platform.training.dataset import LEAK_CORRELATION

#: A text (or integer-code) column with at most this many values gets `allowed` values.
MAX_ALLOWED = 30
#: A text column whose distinct values exceed this share of its rows is free text or a key: left out.
FREE_TEXT_SHARE = 0.5
#: Ranges are widened by this share of the seen range on each side.
RANGE_MARGIN = 0.1

_TARGET_NAMES = [r"(^|_)price(_|$)", r"price", r"^(medv|mv|sale|sales)$", r"(^|_)cost(_|$)", r"cost", r"(^|_)value(_|$)", r"value",
                 r"amount|rent|fare|charges|salary|wage"]
_NOT_TARGET = re.compile(r"^(log|ln|sqrt)_|_(log|ln)$|(^|_)(per|ratio|rank|index)(_|$)")
_ID_NAME = re.compile(r"^(id|.+_id|id_.+|rownames|row_?id|row_?number|index|unnamed_0|pid|key|uuid)$")
_CODE_NAME = re.compile(r"(^|_)(code|zone|zip|zipcode|postcode|postal|district|region|neighbou?rhood|borough|ward"
                        r"|sector|category|class|type|group|cluster|county|state)(_|$)")
_YEAR_NAME = re.compile(r"(^|_)(year|yr)(_|$)")
_MONTH_NAME = re.compile(r"(^|_)(month|mo|mon)(_|$)")
_SALE_WORDS = re.compile(r"sold|sale|date|time|when|period|transaction")
_DATE_TEXT = re.compile(r"^\d{4}-\d{1,2}(-\d{1,2})?([ T].*)?$|^\d{1,2}/\d{1,2}/\d{2,4}([ T].*)?$")
_NA_TOKENS = {"na", "n/a", "nan", "null", "none", "-", "?"}


@dataclass
class Column:
    """What the values of one column look like (``name`` is its name in the description)."""

    name: str
    kind: Literal["number", "date", "text", "na_numbers", "empty"]
    missing: int
    distinct: int
    numbers: pd.Series | None = None
    text: pd.Series | None = None
    dates: pd.Series | None = None

    @property
    def integer(self) -> bool:
        values = self.numbers.dropna() if self.numbers is not None else pd.Series(dtype=float)
        return bool(len(values)) and bool((values % 1 == 0).all())

    @property
    def binary(self) -> bool:
        return self.kind == "number" and self.missing == 0 and set(self.numbers.unique()) <= {0.0, 1.0}


@dataclass
class Draft:
    """The choices of a draft description, before it is written as YAML."""

    name: str
    rows: int
    columns: int
    renames: dict[str, str] = field(default_factory=dict)
    target: str = ""
    target_reason: str = ""
    id_column: str | None = None
    time: dict[str, str] = field(default_factory=dict)
    time_note: str = ""
    numeric: dict[str, Column] = field(default_factory=dict)
    categorical: dict[str, Column] = field(default_factory=dict)
    one_hot: dict[str, list[str]] = field(default_factory=dict)
    one_hot_nullable: set[str] = field(default_factory=set)
    codes: set[str] = field(default_factory=set)
    left_out: dict[str, str] = field(default_factory=dict)
    leaks: dict[str, float] = field(default_factory=dict)


def profile(path: Path) -> tuple[Draft, pd.DataFrame]:
    """Profile the table at ``path`` into a :class:`Draft`; raise :class:`DatasetError` if it cannot be priced."""
    try:
        frame = read_file(path).frame
    except IngestionError as error:
        raise DatasetError(str(error)) from error
    if frame.empty:
        raise DatasetError(f"{path}: no rows; the file has a header but no records")
    renames = _renames(list(frame.columns))
    frame = frame.rename(columns=renames)
    draft = Draft(name=_dataset_name(path), rows=len(frame), columns=len(frame.columns), renames=renames)
    columns = {name: _column(name, frame[name]) for name in frame.columns}
    _choose_one_hot(draft, columns)
    _choose_target(draft, columns, path)
    _choose_time(draft, columns)
    _choose_id(draft, columns)
    _choose_features(draft, columns)
    return draft, frame


def _dataset_name(path: Path) -> str:
    stem = re.sub(r"(\.csv\.gz|\.csv|\.parquet)$", "", path.name, flags=re.IGNORECASE)
    name = normalise_column(stem) or "dataset"
    return name if COLUMN_NAME.fullmatch(name) else f"data_{name}"


def _renames(names: list[str]) -> dict[str, str]:
    """Source names (normalised) that are not valid column names -> a valid, unused name."""
    taken = set(names)
    renames = {}
    for index, name in enumerate(names):
        if COLUMN_NAME.fullmatch(name):
            continue
        base = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_")
        new = f"c_{base}" if base else f"column_{index + 1}"
        while new in taken:
            new += "_"
        renames[name] = new
        taken.add(new)
    return renames


def _column(name: str, values: pd.Series) -> Column:
    """Type one column the way ingestion will read it."""
    if pd.api.types.is_bool_dtype(values):
        values = values.astype("string")
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64")
        return Column(name, "number" if numbers.notna().any() else "empty", int(numbers.isna().sum()),
                      int(numbers.nunique()), numbers=numbers)
    if pd.api.types.is_datetime64_any_dtype(values):
        return Column(name, "date", int(values.isna().sum()), int(values.nunique()), dates=values)
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    present = text.dropna()
    if present.empty:
        return Column(name, "empty", len(text), 0)
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    unparsed = present[numbers[present.index].isna()]
    if unparsed.empty:
        return Column(name, "number", int(text.isna().sum()), int(numbers.nunique()), numbers=numbers, text=text)
    if unparsed.str.lower().isin(_NA_TOKENS).all() and len(unparsed) < len(present):
        return Column(name, "na_numbers", int(text.isna().sum()), int(present.nunique()), text=text)
    if present.str.match(_DATE_TEXT).all():
        dates = pd.to_datetime(text, errors="coerce", format="mixed")
        if dates[present.index].notna().all():
            return Column(name, "date", int(text.isna().sum()), int(present.nunique()), dates=dates, text=text)
    return Column(name, "text", int(text.isna().sum()), int(present.nunique()), text=text)


def _choose_one_hot(draft: Draft, columns: dict[str, Column]) -> None:
    """0/1 columns folded back into one categorical each group.

    A group is either columns sharing a prefix (``heat_gas``, ``heat_oil``: named ``heat``), never
    two set in one row, or a run of adjacent 0/1 columns of which exactly one is set in every
    row (``buick``, ``cadillac``, ... : named ``one_hot_1`` for the user to rename).
    """
    by_prefix: dict[str, list[str]] = {}
    for name, column in columns.items():
        if column.binary and "_" in name:
            by_prefix.setdefault(name.rsplit("_", 1)[0], []).append(name)
    for prefix, members in by_prefix.items():
        if len(members) < 2 or prefix in columns or not COLUMN_NAME.fullmatch(prefix):
            continue
        flags = _set_per_row(columns, members)
        if (flags > 1).any():
            continue
        _fold(draft, columns, prefix, members, nullable=bool((flags == 0).any()))
    run: list[str] = []
    for name in [*columns, ""]:
        if name and columns[name].binary and (not run or (_set_per_row(columns, [*run, name]) <= 1).all()):
            run.append(name)
            continue
        if len(run) >= 2 and (_set_per_row(columns, run) == 1).all():
            _fold(draft, columns, _free_name(columns, draft), run, nullable=False)
        run = [name] if name and columns[name].binary else []


def _set_per_row(columns: dict[str, Column], members: list[str]) -> pd.Series:
    return pd.concat([columns[m].numbers for m in members], axis=1).sum(axis=1)


def _free_name(columns: dict[str, Column], draft: Draft) -> str:
    number = 1
    while f"one_hot_{number}" in columns or f"one_hot_{number}" in draft.one_hot:
        number += 1
    return f"one_hot_{number}"


def _fold(draft: Draft, columns: dict[str, Column], group: str, members: list[str], *, nullable: bool) -> None:
    draft.one_hot[group] = members
    if nullable:
        draft.one_hot_nullable.add(group)
    for member in members:
        del columns[member]


def _choose_target(draft: Draft, columns: dict[str, Column], path: Path) -> None:
    """A positive numeric column named like a price, else the most price-like positive one."""
    positive = [name for name, column in columns.items()
                if column.kind == "number" and column.missing == 0 and (column.numbers > 0).all()
                and not _ID_NAME.fullmatch(name) and column.distinct > 2]
    for pattern in _TARGET_NAMES:
        named = [name for name in positive if re.search(pattern, name) and not _NOT_TARGET.search(name)]
        if named:
            draft.target = named[0]
            draft.target_reason = "a positive number named like a price"
            return
    if not positive:
        raise DatasetError(
            f"{path}: no column can be the target: a price is a number above 0 in every row, and no column is"
            f" (columns: {', '.join(columns)})"
        )

    def price_likeness(name: str) -> float:
        values = columns[name].numbers
        skew = float(values.skew()) if len(values) > 2 else 0.0
        spread = math.log10(float(values.max()) / float(values.min()) + 1.0)
        return columns[name].distinct / draft.rows + (skew > 0) + spread + (not columns[name].integer) * 0.5

    draft.target = max(positive, key=price_likeness)
    draft.target_reason = "no column is named like a price; this positive number varies most like one"


def _choose_time(draft: Draft, columns: dict[str, Column]) -> None:
    """One date column, else a sale year (with a month when there is one), else none."""
    dates = [name for name, column in columns.items() if column.kind == "date" and column.missing == 0]
    if dates:
        name = min(dates, key=lambda n: not _SALE_WORDS.search(n))
        first = columns[name].dates.min()
        draft.time = {"column": name, "start": f"{first.year:04d}-{first.month:02d}"}
        draft.time_note = f"each record's sale date is {name!r}"
        return

    def whole(name: str, low: float, high: float) -> bool:
        column = columns[name]
        return (column.kind == "number" and column.missing == 0 and column.integer
                and column.numbers.min() >= low and column.numbers.max() <= high)

    years = [n for n in columns if _YEAR_NAME.search(n) and whole(n, 1800, 2100) and n != draft.target
             and (re.fullmatch(r"(year|yr)", n) or _SALE_WORDS.search(n))]
    if not years:
        draft.time_note = ("no date or sale-year column found: training holds out a seeded random share and"
                           " validates by K-fold; ingestion partitions by load batch. If the table has a sale"
                           " time, describe it here (see docs/datasets.md)")
        return
    year = min(years, key=lambda n: not _SALE_WORDS.search(n))
    months = [n for n in columns if _MONTH_NAME.search(n) and whole(n, 1, 12) and n != draft.target]
    first_year = int(columns[year].numbers.min())
    if months:
        month = min(months, key=lambda n: not _SALE_WORDS.search(n))
        first = columns[month].numbers[columns[year].numbers == first_year].min()
        draft.time = {"year_column": year, "month_column": month, "start": f"{first_year:04d}-{int(first):02d}"}
        draft.time_note = f"the sale month is {year!r} and {month!r}"
    else:
        draft.time = {"year_column": year, "start": f"{first_year:04d}"}
        draft.time_note = f"only the sale year is known ({year!r}): the split goes by year"


def _choose_id(draft: Draft, columns: dict[str, Column]) -> None:
    """A column unique in every row: named like an id, else a running row number."""
    def unique(name: str) -> bool:
        column = columns[name]
        return column.missing == 0 and column.distinct == draft.rows and name != draft.target

    def row_number(name: str) -> bool:
        column = columns[name]
        if column.kind != "number" or not column.integer:
            return False
        ordered = np.sort(column.numbers.to_numpy())
        return bool(len(ordered)) and bool((np.diff(ordered) == 1).all())

    candidates = [n for n in columns if columns[n].kind in ("number", "text") and unique(n)]
    named = [n for n in candidates if _ID_NAME.fullmatch(n)] or [n for n in candidates if row_number(n)]
    if named:
        draft.id_column = named[0]


def _choose_features(draft: Draft, columns: dict[str, Column]) -> None:
    """Every other column as a numeric or categorical feature, or left out with the reason."""
    used = {draft.target, draft.id_column, draft.time.get("column")}
    target = columns[draft.target].numbers.rank()
    for name, column in columns.items():
        if name in used:
            continue
        if column.kind == "empty":
            draft.left_out[name] = "no values"
        elif column.distinct <= 1 and column.missing == 0:
            draft.left_out[name] = "the same value in every row: nothing to learn"
        elif column.kind == "na_numbers":
            draft.left_out[name] = ("numbers with words such as 'NA' for missing values; ingestion reads only empty"
                                    " cells as missing: write those cells empty, then describe it under numeric")
        elif column.kind == "date":
            draft.left_out[name] = "a second date (only one can be the time); derive a number from it to use it"
        elif column.kind == "number" and _CODE_NAME.search(name) and column.integer and name not in draft.time.values():
            draft.categorical[name] = column
            draft.codes.add(name)
        elif column.kind == "number":
            correlation = column.numbers.rank().corr(target) if column.distinct > 2 else 0.0
            if abs(correlation) >= LEAK_CORRELATION:
                draft.leaks[name] = float(correlation)
            else:
                draft.numeric[name] = column
        elif column.distinct > max(MAX_ALLOWED, FREE_TEXT_SHARE * (draft.rows - column.missing)):
            draft.left_out[name] = f"text with {column.distinct} different values in {draft.rows} rows: free text or a key"
        else:
            draft.categorical[name] = column


# --- writing the draft ---------------------------------------------------------------------


def _key(name: str) -> str:
    """A mapping key as YAML reads it back unchanged (``yes``, ``null`` or ``1`` quoted)."""
    return name if yaml.safe_load(f"{name}: 0") == {name: 0} and COLUMN_NAME.fullmatch(name) else json.dumps(name)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.10g}"


def _range(column: Column) -> tuple[float, float]:
    """The seen range widened by :data:`RANGE_MARGIN` on each side, rounded outward; never below 0 if the data is not."""
    low, high = float(column.numbers.min()), float(column.numbers.max())
    if column.binary:
        return 0.0, 1.0
    margin = RANGE_MARGIN * (high - low) or RANGE_MARGIN * abs(high) or 1.0
    if column.integer:
        margin = float(math.ceil(margin))
    step = 1.0 if column.integer else 10.0 ** math.floor(math.log10(margin))
    widened_low = math.floor((low - margin) / step) * step
    widened_high = math.ceil((high + margin) / step) * step
    if low >= 0:
        widened_low = max(0.0, widened_low)
    return round(widened_low, 12), round(widened_high, 12)


def render(draft: Draft, data_path: Path, yaml_path: Path) -> str:
    """The draft as YAML text, with comments saying what to check and edit."""
    relative = os.path.relpath(data_path.resolve(), yaml_path.resolve().parent)
    lines = [
        f"# Draft data set description made by `price-platform datasets init` from {data_path.name}",
        f"# ({draft.rows} rows, {draft.columns} columns). Check each line marked EDIT, then run",
        f"#   price-platform datasets check {yaml_path.name}",
        "# Every field is explained in docs/datasets.md. Leaving a column out of this file excludes it.",
        f"name: {draft.name}",
        'description: ""  # EDIT: one line saying what the table is and where it comes from',
        "source:",
        f"  path: {json.dumps(relative)}  # relative to this file; drop `source` to feed files through the landing folder",
        f"target: {draft.target}  # EDIT if wrong: {draft.target_reason}; it must be above 0 in every row",
    ]
    if draft.id_column:
        lines.append(f"id_column: {draft.id_column}  # unique in every row")
    else:
        lines.append("# id_column: none found (no column is unique in every row); records get no id")
    if draft.time:
        lines.append(f"time:  # EDIT if wrong: {draft.time_note}")
        lines += [f"  {key}: {json.dumps(value)}" for key, value in draft.time.items()]
        lines.append("  # end: \"YYYY-MM\"  # optional last month; later sales are refused")
    else:
        lines.append(f"# time: {draft.time_note}")
    if draft.renames:
        lines.append("rename:  # headers that are not lower snake case starting with a letter; EDIT the new names if you like")
        lines += [f"  {_key(source)}: {new}" for source, new in draft.renames.items()]
    if draft.one_hot:
        lines.append("one_hot:  # 0/1 columns, at most one set per row, folded back into one categorical named for their prefix")
        lines += [f"  {group}: [{', '.join(members)}]" + ("  # EDIT: name the group" if group.startswith("one_hot_") else "")
                  for group, members in draft.one_hot.items()]
    lines.append("numeric:  # EDIT: ranges are the seen ones widened by 10%; a record outside is refused")
    for name, column in draft.numeric.items():
        low, high = _range(column)
        parts = [f"min: {_number(low)}", f"max: {_number(high)}"]
        parts += ["integer: true"] if column.integer else []
        parts += ["nullable: true"] if column.missing else []
        seen = f"seen {_number(column.numbers.min())} .. {_number(column.numbers.max())}"
        missing = f", {column.missing} missing" if column.missing else ""
        lines.append(f"  {_key(name)}: {{{', '.join(parts)}}}  # {seen}{missing}")
    for name, correlation in draft.leaks.items():
        lines.append(f"  # {_key(name)}: {{}}  # LEFT OUT: a near-exact function of the target {draft.target}"
                     f" (rank correlation {correlation:.3f}): a leak; keep it out")
    if not draft.numeric:
        lines[-1 - len(draft.leaks)] = "numeric: {}  # no numeric feature found"
    categorical = {**draft.categorical, **{group: None for group in draft.one_hot}}
    if categorical:
        lines.append("categorical:  # `allowed` lists every value seen; EDIT to add values the API should accept")
    for name, column in categorical.items():
        lines.append(f"  {_key(name)}: {{{', '.join(_categorical_parts(draft, name, column))}}}")
    if draft.left_out:
        lines.append("# Left out (describe one under numeric or categorical to use it):")
        lines += [f"#   {name}: {reason}" for name, reason in draft.left_out.items()]
    lines.append("# Optional (see docs/datasets.md): segments, area_column, derived, outliers, rules, pii, model.")
    return "\n".join(lines) + "\n"


def _categorical_parts(draft: Draft, name: str, column: Column | None) -> list[str]:
    if column is None:  # a one-hot group: its values are its source columns' names
        parts = [f"allowed: [{', '.join(json.dumps(m) for m in draft.one_hot[name])}]"]
        return parts + (["nullable: true"] if name in draft.one_hot_nullable else [])
    parts = []
    if name in draft.codes:
        parts.append("codes: integer")
        values = sorted({int(v) for v in column.numbers.dropna()})
        if len(values) <= MAX_ALLOWED:
            parts.append(f"allowed: [{', '.join(map(str, values))}]")
    else:
        values = sorted(column.text.dropna().unique())
        if len(values) <= MAX_ALLOWED:
            parts.append(f"allowed: [{', '.join(json.dumps(str(v)) for v in values)}]")
    return parts + (["nullable: true"] if column.missing else [])


def default_output(data_path: Path) -> Path:
    """``prices.csv.gz`` -> ``prices.yaml`` next to it."""
    stem = re.sub(r"(\.csv\.gz|\.csv|\.parquet)$", "", data_path.name, flags=re.IGNORECASE)
    return data_path.with_name(f"{stem}.yaml")

