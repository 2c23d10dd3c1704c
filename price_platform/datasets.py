"""Description of a price data set: where it comes from and what its columns mean.

One YAML file describes a data set; everything downstream (the ``raw_sales`` table, the
validation suite, dbt's column lists, the model's preprocessing and the API's request
schema) is derived from it, so another price table needs a new YAML file, not new code.
Column names are normalised to lower snake case on ingestion and the YAML uses those names.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from price_platform.settings import PACKAGE_DIR

#: What every column name must look like (the normalised form; safe in SQL, Python and URLs).
COLUMN_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


#: Where a problem is in a description: the keys and list indexes leading to it (``("numeric", "area", "min")``).
Location = tuple[str | int, ...]


class DatasetError(ValueError):
    """A data set description that cannot be used, with the reason."""


_SQL_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def expression_sql(expression: str) -> str:
    """A derived feature's expression as SQL: every column name quoted, every number a decimal.

    Only names, numbers, ``+ - * /``, unary minus and parentheses are allowed (the same
    grammar the model's :func:`price_platform.modeling.compile_expression` evaluates in
    Python); anything else raises ``ValueError`` saying what was found. Numbers are written
    with a decimal point so that SQL divides like Python (``1 / 2`` is 0.5 in both).
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise ValueError(f"{expression!r} does not parse: {error.msg}") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"{expression[:40]!r}...: nested too deeply") from None

    def build(node: ast.AST) -> str:
        if isinstance(node, ast.BinOp) and type(node.op) in _SQL_OPERATORS:
            return f"({build(node.left)} {_SQL_OPERATORS[type(node.op)]} {build(node.right)})"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return f"(-{build(node.operand)})"
        if isinstance(node, ast.Name):
            return '"' + node.id.replace('"', '""') + '"'
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return repr(float(node.value))
        raise ValueError(f"{expression!r}: {ast.unparse(node)!r} is not allowed (only column names, numbers,"
                         " + - * /, unary minus and parentheses)")

    return build(tree.body)


def expression_names(expression: str) -> set[str]:
    """The column names an expression uses."""
    return {node.id for node in ast.walk(ast.parse(expression.strip(), mode="eval")) if isinstance(node, ast.Name)}


def _check_rule(rule: str, numeric: set[str]) -> None:
    """Raise ``ValueError`` unless ``rule`` is one comparison of two expressions over numeric columns."""
    try:
        tree = ast.parse(rule.strip(), mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"rule {rule!r} does not parse: {error.msg}") from None
    if not (isinstance(tree, ast.Compare) and len(tree.ops) == 1 and isinstance(tree.ops[0], ast.Lt | ast.LtE | ast.Gt | ast.GtE)):
        raise ValueError(f"rule {rule!r} must be one comparison (<, <=, > or >=) of two expressions")
    for side in (tree.left, tree.comparators[0]):
        expression_sql(ast.unparse(side))
    unknown = expression_names(rule) - numeric
    if unknown:
        raise ValueError(f"rule {rule!r} uses non-numeric or unknown names {sorted(unknown)}")


class NumericColumn(BaseModel):
    """A numeric feature with the range its values must fall in."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None
    nullable: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered_range(self) -> NumericColumn:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class CategoricalColumn(BaseModel):
    """A categorical feature, optionally with the categories it may take.

    ``codes: integer`` declares a category given as an integer code (a zone or district
    number): the API takes it as a JSON integer, and ingestion, training and serving all see
    the code's decimal text (``3`` and ``3.0`` in a file, and ``3`` or ``"3"`` in a request,
    are the category ``"3"``).
    """

    model_config = ConfigDict(extra="forbid")

    allowed: list[str] | None = None
    nullable: bool = False
    order: list[str] | dict[str, float] | None = Field(
        default=None,
        description="An ordered category: its values lowest first (scored 1, 2, ...) or each value's score;"
        " the model also reads the score. Values not listed (an absent part) score 0.",
    )
    codes: Literal["text", "integer"] = Field(
        default="text",
        description="`integer`: the categories are integer codes, sent to the API as JSON integers.",
    )

    @field_validator("allowed", "order", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: object) -> object:
        """YAML reads ``[1, 2]`` as numbers; categories are text."""
        if isinstance(value, list):
            return [_as_text(item) for item in value]
        if isinstance(value, dict):
            return {_as_text(key): score for key, score in value.items()}
        return value

    @model_validator(mode="after")
    def _canonical_codes(self) -> CategoricalColumn:
        if self.codes != "integer":
            return self
        values = [*(self.allowed or []), *(self.order or [])]
        bad = [value for value in values if integer_code(value) is None]
        if bad:
            raise ValueError(f"codes: integer, but {bad} are not integers")
        if self.allowed is not None:
            self.allowed = [str(integer_code(value)) for value in self.allowed]
        if isinstance(self.order, list):
            self.order = [str(integer_code(value)) for value in self.order]
        elif isinstance(self.order, dict):
            self.order = {str(integer_code(value)): score for value, score in self.order.items()}
        return self

    @property
    def scores(self) -> dict[str, float] | None:
        """Each ordered value's score (``None`` for an unordered category)."""
        if self.order is None:
            return None
        return dict(self.order) if isinstance(self.order, dict) else {value: float(i) for i, value in enumerate(self.order, 1)}


def _as_text(value: object) -> object:
    """An int or float read by YAML as the text a file would hold (``3`` -> ``"3"``); others unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def integer_code(value: object) -> int | None:
    """The integer a category code stands for (``3``, ``3.0``, ``"3"``, ``" 03 "``), or ``None`` if it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        if re.fullmatch(r"[+-]?\d+\.0*", text):
            return int(float(text))
    return None


class TimeSpec(BaseModel):
    """When a record was sold: one date column, a year and a month column, or a year column only.

    A year-only time puts every sale in the January of its year (its monthly partition) and
    the training split goes by year (:mod:`price_platform.training.dataset`).
    """

    model_config = ConfigDict(extra="forbid")

    column: str | None = None
    year_column: str | None = None
    month_column: str | None = None
    start: str = Field(description="First month of the data, YYYY-MM (or YYYY).", pattern=r"^\d{4}(-\d{2})?$")
    end: str | None = Field(
        default=None,
        description="Last month of the data, YYYY-MM (or YYYY); open-ended when unset.",
        pattern=r"^\d{4}(-\d{2})?$",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _year_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_way(self) -> TimeSpec:
        if self.column and self.month_column:
            raise ValueError("time: `month_column` goes with `year_column`, not with a date `column`")
        if bool(self.column) == bool(self.year_column) or (self.month_column and not self.year_column):
            raise ValueError(
                "time needs either `column` (a date), or `year_column` with an optional `month_column`"
            )
        yearly = self.granularity == "year"
        if len(self.start) == 4:
            self.start = f"{self.start}-01"
        if self.end is not None and len(self.end) == 4:
            self.end = f"{self.end}-01" if yearly else f"{self.end}-12"
        if yearly and (self.start[5:] != "01" or (self.end is not None and self.end[5:] != "01")):
            raise ValueError("time: a year-only time starts and ends in a year (YYYY or YYYY-01)")
        if self.end is not None and self.end < self.start:
            raise ValueError(f"time: end {self.end} is before start {self.start}")
        return self

    @property
    def granularity(self) -> Literal["month", "year"]:
        """``year`` when only a year is known, else ``month``."""
        return "year" if self.year_column and not self.month_column else "month"

    @property
    def columns(self) -> list[str]:
        if self.column:
            return [self.column]
        return [c for c in (self.year_column, self.month_column) if c]


class OutlierRule(BaseModel):
    """Rows the models are not *fitted* on: a column's value above or below a bound (evaluation keeps them)."""

    model_config = ConfigDict(extra="forbid")

    column: str
    above: float | None = None
    below: float | None = None
    reason: str = ""

    @model_validator(mode="after")
    def _bounded(self) -> OutlierRule:
        if self.above is None and self.below is None:
            raise ValueError(f"outlier rule on {self.column!r} needs `above` or `below`")
        return self


class SourceSpec(BaseModel):
    """Where the data set's records come from when it is not fed through the landing folder."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(default=None, description="CSV/Parquet file; relative paths are from the YAML file.")
    query: str | None = Field(default=None, description="SQL query run on `url` (another PostgreSQL).")
    url: str | None = None


class ModelSpec(BaseModel):
    """Which model prices the data set, and how its members are chosen by the number of training rows."""

    model_config = ConfigDict(extra="forbid")

    family: Literal["blend", "xgboost"] = Field(
        default="blend",
        description="`blend`: kernel ridge and XGBoost averaged, the kernel ridge's share learned by the study"
        " (0 when the trees alone validate better); `xgboost`: the trees alone, no kernel ridge fitted.",
    )
    exact_kernel_rows: int = Field(
        default=10_000,
        ge=1,
        description="Up to this many training rows kernel ridge is exact (an n x n kernel); above, a Nystroem"
        " approximation on `kernel_components` landmark rows, linear in n.",
    )
    kernel_components: int = Field(default=1_000, ge=10, description="Landmark rows of the Nystroem kernel ridge.")
    area_monotone: Literal["constrained_members", "blend"] = Field(
        default="constrained_members",
        description="What must not price a larger `area_column` lower: the members constrained monotone (XGBoost)"
        " or the whole blend (kernel ridge then does not read the area and the features growing with it).",
    )
    price_band_factor: float = Field(
        default=2.0,
        ge=1.0,
        description="Answers are capped to [lowest training price / factor, highest * factor] and flagged `capped`.",
    )


class DatasetSpec(BaseModel):
    """A price data set: source, target, time, id, typed features, segments and derived features."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    source: SourceSpec = SourceSpec()
    target: str
    id_column: str | None = None
    time: TimeSpec | None = None
    numeric: dict[str, NumericColumn] = Field(default_factory=dict)
    categorical: dict[str, CategoricalColumn] = Field(default_factory=dict)
    segments: list[str] = Field(default_factory=list)
    area_column: str | None = Field(default=None, description="Size column used for price per area.")
    derived: dict[str, str] = Field(
        default_factory=dict,
        description="Features computed from others by an arithmetic expression valid in SQL and Python.",
    )
    pii: list[str] = Field(default_factory=list, description="Columns stored hashed in prediction logs.")
    rename: dict[str, str] = Field(
        default_factory=dict,
        description="Source column (normalised) -> the description's column name, applied on ingestion.",
    )
    one_hot: dict[str, list[str]] = Field(
        default_factory=dict,
        description="A categorical column regrouped on ingestion from 0/1 source columns, each named for its value.",
    )
    outliers: list[OutlierRule] = Field(
        default_factory=list, description="Rows left out of model fitting (not of evaluation), by value bounds."
    )
    target_min: float = Field(default=0.0, description="Target values must be greater than this.")
    model: ModelSpec = ModelSpec()
    rules: list[str] = Field(
        default_factory=list,
        description="Cross-field rules every record must satisfy, e.g. `length <= 10 * width`: two expressions"
        " over numeric columns joined by <, <=, > or >=. The API refuses (422) a record breaking one.",
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> DatasetSpec:
        """Refuse a description whose parts do not fit together, naming each part at fault.

        Every problem is found, not only the first. With ``context={"problems": [...]}`` they
        are appended there as ``(location, message)`` (``datasets check`` reports each with
        its line); otherwise they are raised together.
        """
        problems = self.problems()
        collected = info.context.get("problems") if isinstance(info.context, dict) else None
        if isinstance(collected, list):
            collected.extend(problems)
        elif problems:
            raise ValueError("\n".join(message for _, message in problems))
        return self

    def problems(self) -> list[tuple[Location, str]]:
        """What does not fit together, each as (where in the YAML, message)."""
        found: list[tuple[Location, str]] = []
        found += self._name_problems()
        both = set(self.numeric) & set(self.categorical)
        for column in sorted(both):
            found.append((("categorical", column), f"columns both numeric and categorical: [{column!r}]"))
        known = set(self.columns)
        for group, names in {"segments": self.segments, "pii": self.pii}.items():
            for index, name in enumerate(names):
                if name not in known:
                    found.append(((group, index), f"{group} names unknown columns: [{name!r}]"))
        for source, column in self.rename.items():
            if column not in known:
                found.append((("rename", source), f"rename: targets [{column!r}] are not columns of the description"))
        for group, members in self.one_hot.items():
            if group not in self.categorical:
                found.append((("one_hot", group), f"one_hot: {group!r} is not a categorical column"))
            if len(members) < 2:
                found.append((("one_hot", group), f"one_hot: {group!r} needs at least two source columns"))
        for index, rule in enumerate(self.outliers):
            if rule.column not in self.numeric:
                found.append(
                    (("outliers", index, "column"), f"outlier rule names {rule.column!r}, which is not a numeric column")
                )
        if self.area_column and self.area_column not in self.numeric:
            found.append((("area_column",), f"area_column {self.area_column!r} is not a numeric column"))
        if self.target in self.numeric or self.target in self.categorical:
            found.append((("target",), f"target {self.target!r} must not also be a feature"))
        if self.id_column and self.id_column in {*self.features, self.target}:
            found.append((("id_column",), f"id_column {self.id_column!r} must not also be a feature or the target"))
        if self.time and self.target in self.time.columns:
            found.append((("time",), f"time: the target {self.target!r} cannot also be the time"))
        for name, expression in self.derived.items():
            if name in {*self.features, self.target}:
                found.append((("derived", name), f"derived feature {name!r} has the name of a column of the description"))
            try:
                expression_sql(expression)
            except ValueError as error:
                found.append((("derived", name), f"derived feature {name!r}: {error}"))
                continue
            unknown = expression_names(expression) - set(self.numeric)
            if unknown:
                found.append(
                    (("derived", name), f"derived feature {name!r} uses non-numeric or unknown names {sorted(unknown)}")
                )
        for index, rule in enumerate(self.rules):
            try:
                _check_rule(rule, set(self.numeric))
            except ValueError as error:
                found.append((("rules", index), str(error)))
        return found

    def _name_problems(self) -> list[tuple[Location, str]]:
        """Column names that do not match :data:`COLUMN_NAME`: every name a column has after ``rename``.

        ``rename``'s keys are the source's own (normalised) names and may be anything; its values,
        the one-hot source columns and every column of the description must match.
        """
        time = self.time
        names: dict[str, list[tuple[Location, str]]] = {
            "target": [(("target",), self.target)],
            "id_column": [(("id_column",), self.id_column)] if self.id_column else [],
            "time": [(("time", key), getattr(time, key)) for key in ("column", "year_column", "month_column")
                     if time and getattr(time, key)],
            "numeric": [(("numeric", column), column) for column in self.numeric],
            "categorical": [(("categorical", column), column) for column in self.categorical],
            "derived": [(("derived", column), column) for column in self.derived],
            "rename": [(("rename", source), column) for source, column in self.rename.items()],
            "one_hot": [(("one_hot", group), member) for group, members in self.one_hot.items() for member in members],
        }
        found: list[tuple[Location, str]] = []
        for field_name, located in names.items():
            for where, column in located:
                if not COLUMN_NAME.fullmatch(column):
                    found.append((where, (f"{field_name}: column names [{column!r}] must match {COLUMN_NAME.pattern}"
                                  " (lower snake case, as ingestion normalises file headers)")))
        return found

    @property
    def features(self) -> list[str]:
        """The model's input columns as a client sends them (numeric, then categorical)."""
        return [*self.numeric, *self.categorical]

    @property
    def columns(self) -> list[str]:
        """Every column of a raw record: id, features and target."""
        id_columns = [self.id_column] if self.id_column else []
        time_columns = [c for c in (self.time.columns if self.time else []) if c not in self.numeric]
        return [*id_columns, *time_columns, *self.features, self.target]

    @property
    def column_kinds(self) -> dict[str, Literal["number", "text"]]:
        """Every record column and its storage: numbers (numeric features, target, year/month) or text."""
        numbers = {*self.numeric, self.target}
        if self.time is not None and self.time.column is None:
            numbers |= set(self.time.columns)
        return {column: "number" if column in numbers else "text" for column in self.columns}

    @property
    def has_time(self) -> bool:
        return self.time is not None


def month_key(year: int, month: int) -> str:
    """Partition key of a calendar month (``YYYY-MM-01``): the key of a sale's month, or of a year's January."""
    return f"{year:04d}-{month:02d}-01"


def normalise_column(name: str) -> str:
    """Lower snake case, the form every column takes inside the platform."""
    name = re.sub(r"[^0-9A-Za-z]+", "_", name.strip())
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name) if not name.isupper() and "_" not in name else name
    return name.strip("_").lower()


def load_dataset(path: Path | str) -> DatasetSpec:
    """Read and check a data set description; raise :class:`DatasetError` naming the file and problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DatasetError(f"{path}: cannot read data set description: {error}") from error
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: a data set description must be a mapping, got {type(raw).__name__}")
    try:
        spec = DatasetSpec.model_validate(raw)
    except ValidationError as error:
        raise DatasetError(f"{path}: invalid data set description:\n{error}") from error
    if spec.source.path is not None and not spec.source.path.is_absolute():
        spec.source.path = (path.parent / spec.source.path).resolve()
    return spec


def bundled_sample() -> Path:
    """The Ames housing sales shipped with the package."""
    return PACKAGE_DIR / "data" / "ames_housing.csv.gz"
