"""``datasets check``: every problem of a data set description, and of a file against it, at once.

A description is read with the YAML nodes kept (:func:`yaml.compose`), so that each problem
carries the line of the key it is about. Schema problems come from pydantic and from
:meth:`DatasetSpec.problems`; after each pass the offending keys are pruned and the rest is
validated again, so that one mistake does not hide the next. The file is then read as
ingestion reads it and compared with what survived: columns present, values parse as their
type, ranges, allowed values, missing values, a unique id, the time window, and leaks
(features that are a near-exact function of the target).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from price_platform.datasets import (
    CategoricalColumn,
    DatasetSpec,
    Location,
    NumericColumn,
    integer_code,
)
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.sources import read_file
from price_platform.training.dataset import LEAK_CORRELATION

#: Example values and rows named per problem.
MAX_EXAMPLES = 5
#: Schema passes (validate, prune what failed, validate again) before giving up.
MAX_PASSES = 8


@dataclass(frozen=True)
class Problem:
    """One problem: the YAML line it is about (``None`` for the file itself), the field, what is wrong."""

    line: int | None
    field: str
    message: str

    def render(self, yaml_path: Path) -> str:
        where = f"{yaml_path}:{self.line}" if self.line is not None else str(yaml_path)
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass
class Description:
    """A description as read: its raw mapping, its YAML node tree, and the problems found in it."""

    path: Path
    raw: dict[str, Any] | None
    root: yaml.Node | None
    problems: list[Problem]
    spec: DatasetSpec | None = None

    def line(self, location: Location) -> int | None:
        """The 1-based line of the deepest key of ``location`` present in the YAML."""
        node, line = self.root, 1
        for part in location:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def problem(self, location: Location, message: str) -> Problem:
        return Problem(self.line(location), ".".join(str(part) for part in location), message)


def read_description(path: Path) -> Description:
    """Parse ``path`` keeping line marks, then validate it as far as it goes (see the module docstring)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return Description(path, None, None, [Problem(None, "", f"cannot read data set description: {error}")])
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        raw = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        return Description(path, None, None, [Problem(mark.line + 1 if mark else None, "", f"not valid YAML: {error.problem}")])
    except yaml.YAMLError as error:
        return Description(path, None, None, [Problem(None, "", f"not valid YAML: {error}")])
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        return Description(path, None, root, [Problem(1, "", f"a data set description must be a mapping, got {type(raw).__name__}")])
    description = Description(path, raw, root, _duplicate_keys(root))
    description.spec = _validate(description)
    return description


def _duplicate_keys(node: yaml.Node, where: tuple[str, ...] = ()) -> list[Problem]:
    """Keys given twice in one mapping (YAML keeps the last silently)."""
    found: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            line = key.start_mark.line + 1
            if name in seen:
                field = ".".join((*where, name))
                found.append(Problem(line, field, f"given twice (lines {seen[name]} and {line}); only the last counts"))
            seen[name] = line
            found += _duplicate_keys(value, (*where, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, (*where, str(index)))
    return found


def _validate(description: Description) -> DatasetSpec | None:
    """The spec of what validates, recording every schema problem; ``None`` when a required part is wrong."""
    raw = copy.deepcopy(description.raw)
    assert raw is not None
    pruned: set[Location] = set()
    reported: set[tuple[Location, str]] = set()
    for _ in range(MAX_PASSES):
        consistency: list[tuple[Location, str]] = []
        try:
            spec = DatasetSpec.model_validate(raw, context={"problems": consistency})
        except ValidationError as error:
            progress = False
            for item in error.errors(include_url=False):
                location = tuple(part for part in item["loc"] if "[" not in str(part))
                if location not in pruned and (location, item["msg"]) not in reported:
                    reported.add((location, item["msg"]))
                    description.problems.append(description.problem(location, _message(item)))
                target = _prune(raw, location)
                if target is not None and target not in pruned:
                    pruned.add(target)
                    progress = True
            if not progress:
                return None
            continue
        for location, message in consistency:
            description.problems.append(description.problem(location, message))
        return spec
    return None


def _message(item: dict[str, Any]) -> str:
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        return "unknown field (not part of the description schema; a typo?)"
    if item["type"] == "missing":
        return "field required"
    return message


def _prune(raw: dict[str, Any], location: Location) -> Location | None:
    """Remove the part of ``raw`` at fault: the deepest mapping key on ``location`` above any list; return it."""
    path: list[str | int] = []
    for part in location:
        if isinstance(part, int):
            break
        path.append(part)
    while path:
        parent: Any = raw
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent:
            if path == ["target"]:
                return None
            if path == ["name"]:
                parent["name"] = "unnamed"  # so that the rest is still checked
            else:
                del parent[path[-1]]
            return tuple(path)
        path.pop()
    return None


# --- the file against the description ------------------------------------------------------


def file_problems(description: Description, data_file: Path, *, from_source: bool = False) -> tuple[list[Problem], int]:
    """Problems of ``data_file`` against the description's spec, and the number of data rows read.

    ``from_source``: the file is the description's ``source.path`` (a file that cannot be read is
    then reported at that line).
    """
    spec = description.spec
    assert spec is not None
    try:
        frame = read_file(data_file).frame
    except IngestionError as error:
        return [description.problem(("source", "path"), str(error)) if from_source else Problem(None, "file", str(error))], 0
    frame = frame.rename(columns=spec.rename)
    found: list[Problem] = []
    frame = _regrouped(description, frame, found)
    where = _declared_at(spec)
    missing = [column for column in spec.columns if column not in frame.columns]
    for column in missing:
        found.append(description.problem(where[column], f"column {column!r} is not in {data_file.name}; the file has "
                                         f"{', '.join(map(str, frame.columns))}"))
    if frame.empty:
        found.append(Problem(None, "file", f"{data_file}: no rows; the file has a header but no records"))
        return found, 0
    rows = pd.Series(np.arange(1, len(frame) + 1), index=frame.index)
    numbers: dict[str, pd.Series] = {}
    for column in [*spec.numeric, spec.target, *(spec.time.columns if spec.time and not spec.time.column else [])]:
        if column in frame.columns and column not in numbers:
            numbers[column] = _numbers(description, where[column], frame[column], rows, found)
    for column, rule in spec.numeric.items():
        if column in numbers:
            _numeric_values(description, ("numeric", column), rule, numbers[column], rows, found)
    for column, rule in spec.categorical.items():
        if column in frame.columns:
            _categorical_values(description, ("categorical", column), rule, frame[column], rows, found)
    if spec.target in numbers:
        target = numbers[spec.target]
        _missing(description, ("target",), target, rows, found)
        _where(description, ("target",), target <= spec.target_min, target, rows, found,
               f"values at or below target_min {spec.target_min:g} (prices must be greater)")
        found += _leaks(description, spec, numbers)
    if spec.id_column and spec.id_column in frame.columns:
        ids = _text(frame[spec.id_column])
        _missing(description, ("id_column",), ids, rows, found)
        _where(description, ("id_column",), ids.notna() & ids.duplicated(keep=False), ids, rows, found,
               "values that are not unique (an id names one record)")
    if spec.time is not None:
        _time_values(description, spec, frame, numbers, rows, found)
    return found, len(frame)


def _declared_at(spec: DatasetSpec) -> dict[str, Location]:
    """Where in the YAML each column of a raw record is declared."""
    where: dict[str, Location] = {spec.target: ("target",)}
    if spec.id_column:
        where[spec.id_column] = ("id_column",)
    if spec.time:
        for key in ("column", "year_column", "month_column"):
            if getattr(spec.time, key):
                where[getattr(spec.time, key)] = ("time", key)
    where |= {column: ("numeric", column) for column in spec.numeric}
    where |= {column: ("categorical", column) for column in spec.categorical}
    return where


def _regrouped(description: Description, frame: pd.DataFrame, found: list[Problem]) -> pd.DataFrame:
    """``frame`` with the one-hot groups folded (as ingestion does), recording each group's faults."""
    assert description.spec is not None
    for group, members in description.spec.one_hot.items():
        absent = [member for member in members if member not in frame.columns]
        if absent:
            found.append(description.problem(("one_hot", group), f"source columns {absent} are not in the file"))
            continue
        flags = frame[members].apply(pd.to_numeric, errors="coerce").fillna(0).astype(bool)
        several = flags.sum(axis=1) > 1
        if several.any():
            listed = ", ".join(str(i + 1) for i in np.flatnonzero(several.to_numpy())[:MAX_EXAMPLES])
            found.append(description.problem(("one_hot", group), f"more than one of {members} set in rows {listed}"))
        values = flags.idxmax(axis=1).where(flags.any(axis=1), None)
        frame = frame.drop(columns=members).assign(**{group: values})
    return frame


def _text(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def _examples(values: pd.Series, bad: pd.Series, rows: pd.Series) -> str:
    indexes = bad[bad].index[:MAX_EXAMPLES]
    listed = ", ".join(f"row {rows[i]}: {_shown(values[i])}" for i in indexes)
    more = f" and {int(bad.sum()) - len(indexes)} more" if bad.sum() > len(indexes) else ""
    return listed + more


def _shown(value: object) -> str:
    """A value as the user wrote it: ``5`` for 5.0, ``'abc'`` for text, ``missing`` for none."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return "missing"
    if isinstance(value, float | np.floating | int | np.integer):
        return f"{float(value):.10g}"
    return repr(str(value))


def _where(description: Description, location: Location, bad: pd.Series, values: pd.Series, rows: pd.Series,
           found: list[Problem], what: str) -> None:
    bad = bad.fillna(False).astype(bool)
    if bad.any():
        found.append(description.problem(location, f"{int(bad.sum())} {what}: {_examples(values, bad, rows)}"))


def _missing(description: Description, location: Location, values: pd.Series, rows: pd.Series,
             found: list[Problem]) -> None:
    _where(description, location, values.isna(), values.astype(object), rows, found, "missing values")


def _numbers(description: Description, location: Location, values: pd.Series, rows: pd.Series,
             found: list[Problem]) -> pd.Series:
    """The column as floats, recording values that are present but not numbers."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    text = _text(values)
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    _where(description, location, text.notna() & parsed.isna(), text, rows, found, "values that are not numbers")
    return parsed


def _numeric_values(description: Description, location: Location, rule: NumericColumn, values: pd.Series,
                    rows: pd.Series, found: list[Problem]) -> None:
    if not rule.nullable:
        _missing(description, location, values, rows, found)
    if rule.integer:
        _where(description, location, values.notna() & (values % 1 != 0), values, rows, found,
               "values with a fraction (the column is `integer: true`)")
    if rule.min is not None:
        _where(description, location, values < rule.min, values, rows, found, f"values below min {rule.min:g}")
    if rule.max is not None:
        _where(description, location, values > rule.max, values, rows, found, f"values above max {rule.max:g}")


def _categorical_values(description: Description, location: Location, rule: CategoricalColumn, values: pd.Series,
                        rows: pd.Series, found: list[Problem]) -> None:
    text = _text(values)
    if not rule.nullable:
        _missing(description, location, text, rows, found)
    if rule.codes == "integer":
        codes = text.map(lambda value: integer_code(value) if isinstance(value, str) else None)
        _where(description, location, text.notna() & codes.isna(), text, rows, found,
               "values that are not integer codes (the column is `codes: integer`)")
        text = codes.map(lambda code: None if code is None or pd.isna(code) else str(int(code)))
    if rule.allowed is not None:
        outside = text.notna() & ~text.isin(rule.allowed)
        if outside.any():
            unknown = text[outside].value_counts()
            listed = ", ".join(f"{value!r} ({count}x)" for value, count in unknown.head(MAX_EXAMPLES).items())
            more = f" and {len(unknown) - MAX_EXAMPLES} more" if len(unknown) > MAX_EXAMPLES else ""
            found.append(description.problem(location, f"{int(outside.sum())} values not in `allowed`: {listed}{more}"))


def _leaks(description: Description, spec: DatasetSpec, numbers: dict[str, pd.Series]) -> list[Problem]:
    """Numeric features that are a near-exact monotone function of the target (such as its log)."""
    target = numbers[spec.target].rank()
    found = []
    for column in spec.numeric:
        values = numbers.get(column)
        if column == spec.target or values is None or values.notna().sum() <= 2 or values.nunique() <= 2:
            continue
        correlation = values.rank().corr(target)
        if abs(correlation) >= LEAK_CORRELATION:
            found.append(description.problem(
                ("numeric", column),
                f"a near-exact function of the target {spec.target!r} (rank correlation {correlation:.4f}): a leak;"
                " leave the column out of the description",
            ))
    return found


def _time_values(description: Description, spec: DatasetSpec, frame: pd.DataFrame, numbers: dict[str, pd.Series],
                 rows: pd.Series, found: list[Problem]) -> None:
    """Dates that do not parse, years and months that are not, and sales outside ``start``..``end``."""
    time = spec.time
    assert time is not None
    if time.column:
        if time.column not in frame.columns:
            return
        text = _text(frame[time.column])
        dates = pd.to_datetime(text, errors="coerce", format="mixed")
        _where(description, ("time", "column"), dates.isna(), text.astype(object), rows, found, "values that are not dates")
        months = pd.Series([f"{d.year:04d}-{d.month:02d}" if not pd.isna(d) else None for d in dates], index=frame.index)
    else:
        years = numbers.get(time.year_column or "")
        if years is None:
            return
        _where(description, ("time", "year_column"), years.isna() | (years % 1 != 0), years, rows, found, "values that are not years")
        month_values = numbers.get(time.month_column) if time.month_column else pd.Series(1.0, index=frame.index)
        if month_values is None:
            return
        if time.month_column:
            _where(description, ("time", "month_column"), ~month_values.between(1, 12) | (month_values % 1 != 0),
                   month_values, rows, found, "values that are not months (1-12)")
        good = years.notna() & (years % 1 == 0) & month_values.between(1, 12) & (month_values % 1 == 0)
        months = pd.Series([f"{int(y):04d}-{int(m):02d}" if ok else None for y, m, ok in zip(years, month_values, good, strict=True)],
                           index=frame.index)
    known = months.notna()
    _where(description, ("time", "start"), known & (months < time.start), months, rows, found,
           f"sales before start {time.start}")
    if time.end is not None:
        _where(description, ("time", "end"), known & (months > time.end), months, rows, found, f"sales after end {time.end}")
