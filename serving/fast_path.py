"""The XGBoost pipeline compiled from its fitted steps: records straight into arrays, then the booster.

``pipeline.predict`` on one row pays scikit-learn's per-call overhead (DataFrame checks,
``ColumnTransformer.transform``) many times over the cost of the trees. :func:`compile_booster`
reads the *fitted* steps (derived-feature expressions, the column layout of the
``ColumnTransformer``, the ordinal encoders' categories, the booster and the target
transform) and builds :class:`CompiledBooster`, which encodes records into a float32 array
and calls ``booster.inplace_predict``. Nothing is re-implemented from the training code:
every number comes from the fitted object, and a test checks agreement with
``pipeline.predict`` on a whole holdout. The entry point is
:func:`serving.compiled.compile_pipeline` (imported here for :func:`build_predictor`): it hands
this module the XGBoost pipeline and :mod:`serving.blend` the blend of kernel ridge and XGBoost
(``build_blend_pipeline``); this module and :mod:`serving.blend` do not import each other. A
pipeline of any other shape raises :class:`NotCompilable` and is served by
:class:`PipelinePredictor` instead.

Where a 1,000-record ``/predict`` of the default blend spends its CPU (issue 19.3; each step of
the request path timed in one process with ``time.thread_time``, in turn, 40 rounds, medians;
loaded 2-core host, load average about 11; in units of the comparator, the booster's own
``inplace_predict`` on the encoded float32 records, 14.4 ms of CPU in that run):

* the booster, 1.0; kernel ridge, 0.35 in the sequence (its quadratic form timed alone, 3.7 ms,
  0.26);
* encoding (:meth:`serving.encoder.EncoderPlan.encode_many`), 0.36: the 40 categorical inputs'
  dictionary look-ups 1.2 ms, numeric values with None as NaN into float64 0.8 ms, the table
  rows 0.6 ms, transposing the records 0.3 ms; each member's columns (kernel ridge's picked,
  the trees' taken in float32), 0.11;
* JSON into msgspec records (:func:`serving.schemas.decode`, with the schema's checks), 0.18
  (2.2 ms, 30 ns a field; ``json.loads`` alone takes 9.6 ms); records to tuples, 0.06;
* the answer (floats to lists, 1,000 ids, the structs, JSON, gzip), 0.18.

Those parts add up to 2.25 on one thread; the server under ``make bench BENCH=serving`` used
2.68 times the comparator's CPU in that run (1.88-2.02 in quieter runs), the rest being the
two-thread split of :meth:`serving.blend.CompiledBlend.predict` (a second booster call with its
fixed cost of 1-1.8 ms of CPU, both cores busy), uvicorn and Litestar. So the issue's
``batch_cpu_per_row_vs_inplace <= 1.5`` is not reached with XGBoost as the tree engine and kernel
ridge in float64: the booster, kernel ridge and decoding alone are 1.4-1.5 before one value is
encoded, and encoding is at Python's own cost per value (about 30 ns a look-up). Tried and not
kept: filling each member's matrix straight from the lookup tables (no internal layout, the
trees' matrix directly in float32) measured no change (6.9 ms either way); kernel ridge's
projection in float32 took 2.4 instead of 4.3 ms and moved prices by at most 7e-8, but the
quadratic form is held to 1e-9 of the kernel by its tests; the categorical codes with
``pandas.factorize`` (1.3 ms per column, 1.8 ms over all columns at once, against 1.2 ms),
``operator.itemgetter`` (1.6 ms) or a list comprehension (2.1 ms); the numeric values through a
2-D object array (1.0 ms to build it, 0.7 ms to convert). Not tried, by estimate: kernel ridge's
projection precomputed per category (a 248-wide float64 row gathered per categorical input and
record, about 80 MB of memory traffic per 1,000 records, more than the product it replaces).
Kept: the table rows written straight into the matrix (``np.take`` with ``out``, 0.72 to
0.57 ms) and the trees' float32 columns taken from the encoding cast once (0.57 to 0.29 ms).

Build or buy (issue 19.4, ``benchmarks/serving_compilers.py``; one run, loaded host, median CPU
times on one thread, wall clock in the bench's figures). Neither compiler can express the
pipeline: ``skl2onnx`` converts the imputer + scaler, one-hot and target-encoder blocks and
refuses the derived features, the ``log1p`` block, the ordered scores, kernel ridge and the
banded target; Treelite compiles tree ensembles only. What they can replace is the trees,
which the hand-written path leaves to XGBoost itself. With the hand-written encoder and kernel
ridge around each tree engine, the whole blend costs 48.5 ms of CPU per 1,000 records with
XGBoost, 48.9 with ONNX Runtime (trees alone: 22.9 against 30.4 ms), 109 with tl2cgen, and
``pipeline.predict`` 202 (4.2x); one record costs 2.9 ms with XGBoost, 0.97 with ONNX Runtime,
0.99 with tl2cgen, 108 with ``pipeline.predict`` (37x). ONNX Runtime and tl2cgen prices differ
from ``pipeline.predict`` by up to 8.3e-6 and 8.6e-6 (relative), the hand-written path by
2.9e-7; the serving gate (``serving.model_store.AGREEMENT``) is 1e-6. tl2cgen took 583 s of gcc
to build, ONNX Runtime 11 s. So the hand-written encoder and kernel ridge are kept (nothing
bought expresses them; 4.2x over scikit-learn at 1,000 records, 37x at one), and the trees
stay with XGBoost: at 1,000 records it is level with ONNX Runtime or up to 1.3x ahead, and it
is the only engine within the gate. The margin is thin at 1,000 records and reversed at one
record (ONNX Runtime 3x faster, XGBoost's fixed cost per call is 1-2.5 ms of CPU): taking ONNX
Runtime for the trees would mean accepting prices 8e-6 away from the pipeline's.
"""


from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder
from xgboost import XGBRegressor

from serving.compiled import (
    CompiledPipeline,
    NotCompilable,
    PipelineParts,
    compile_pipeline,
    derived_sources,
    serving_booster,
)

#: Below this many rows, records are encoded with plain Python (numpy's per-call cost dominates).
_ROW_BY_ROW = 8


class Predictor(Protocol):
    """Prices for rows given as tuples in ``DatasetSpec.features`` order."""

    fast: bool
    band: tuple[float, float] | None  # prices are capped to it (None: no band)

    def predict(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray: ...


def capped_flags(prices: np.ndarray, band: tuple[float, float] | None) -> list[bool]:
    """Per price, whether it is an edge of ``band``: the model's answer was capped there."""
    if band is None:
        return [False] * len(prices)
    return ((prices <= band[0]) | (prices >= band[1])).tolist()


@dataclass(frozen=True)
class _Categorical:
    source: int  # index of the input feature
    codes: dict[Any, float]  # category (None included, as scikit-learn treats it) -> code
    unknown: float
    missing: float  # code of a float NaN


@dataclass
class CompiledBooster(CompiledPipeline):
    """Derived features, column layout, ordinal codes and booster taken from one fitted pipeline."""

    features: list[str]
    n_numeric: int
    derived: dict[str, Callable[[Any], Any]]
    derived_inputs: dict[str, list[str]]
    layout: list[int | _Categorical]  # per model column: index into numeric values, or a categorical encoder
    output_names: list[str]
    booster: xgb.Booster
    iteration_range: tuple[int, int]
    log_target: bool
    fast: bool = True
    _numeric_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self._numeric_names = [*self.features[: self.n_numeric], *self.derived]

    def encode(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        """The float32 matrix the booster was trained on, one row per record."""
        if len(rows) <= _ROW_BY_ROW:
            try:
                return np.array([self._encode_row(row) for row in rows], dtype=np.float32)
            except ZeroDivisionError:  # numpy's inf/nan semantics are the pipeline's: use the array path
                pass
        return self._encode_rows(rows)

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        """The booster's raw output (log price for a log-target model)."""
        return self.booster.inplace_predict(
            matrix, iteration_range=self.iteration_range, missing=np.nan, validate_features=False
        )

    def predict(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        margin = self.margin(self.encode(rows))
        return np.exp(margin) if self.log_target else margin

    def contributions(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        """SHAP values per model column plus the bias (last column); each row sums to the margin."""
        matrix = xgb.DMatrix(self.encode(rows), missing=np.nan)
        return self.booster.predict(matrix, pred_contribs=True, iteration_range=self.iteration_range)

    def _encode_row(self, row: tuple[Any, ...]) -> list[float]:
        values: list[Any] = [math.nan if value is None else value for value in row[: self.n_numeric]]
        if self.derived:
            named = dict(zip(self.features, values, strict=False))
            values.extend(function(named) for function in self.derived.values())
        return [
            values[column] if type(column) is int else _code(column, row[column.source])  # type: ignore[arg-type]
            for column in self.layout
        ]

    def _encode_rows(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        columns = list(zip(*rows, strict=True))
        numeric = np.array(columns[: self.n_numeric], dtype=np.float64).reshape(self.n_numeric, len(rows))
        values = list(numeric)
        if self.derived:
            named = dict(zip(self.features, values, strict=False))
            with np.errstate(divide="ignore", invalid="ignore"):
                values.extend(np.asarray(function(named), dtype=np.float64) for function in self.derived.values())
        matrix = np.empty((len(rows), len(self.layout)), dtype=np.float32)
        for index, column in enumerate(self.layout):
            if type(column) is int:
                matrix[:, index] = values[column]
            else:
                codes, unknown, missing = column.codes, column.unknown, column.missing  # type: ignore[union-attr]
                matrix[:, index] = [
                    codes.get(value, unknown) if value == value else missing  # noqa: PLR0124 (NaN test)
                    for value in columns[column.source]  # type: ignore[union-attr]
                ]
        return matrix

    def explain(self, row: tuple[Any, ...]) -> tuple[dict[str, float], dict[str, float], float, float]:
        """(per input feature, per model column, base value, margin) in the model's output space.

        A derived feature's contribution is shared equally by the input columns its
        expression names, so the per-input contributions plus the base value still add up
        to the margin.
        """
        values = self.contributions([row])[0].astype(np.float64)
        per_column = dict(zip(self.output_names, values[:-1].tolist(), strict=True))
        base = float(values[-1])
        per_input = {name: 0.0 for name in self.features}
        for name, value in per_column.items():
            sources = self.derived_inputs.get(name, [name])
            for source in sources:
                per_input[source] += value / len(sources)
        return per_input, per_column, base, float(values.sum())


def _code(column: _Categorical, value: Any) -> float:
    return column.codes.get(value, column.unknown) if value == value else column.missing  # noqa: PLR0124 (NaN test)


@dataclass
class PipelinePredictor:
    """The fitted pipeline itself, for models the fast path cannot compile."""

    pipeline: Any
    features: list[str]
    fast: bool = False

    @property
    def band(self) -> tuple[float, float] | None:
        """The band of a ``BandedTargetRegressor`` last step, which caps the pipeline's prices."""
        steps = getattr(self.pipeline, "steps", None)
        return getattr(steps[-1][1], "band_", None) if steps else None

    def predict(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        frame = pd.DataFrame.from_records(list(rows), columns=self.features)
        return np.asarray(self.pipeline.predict(frame), dtype=np.float64)


def compile_booster(parts: PipelineParts, features: list[str], *, threads: int = 1) -> CompiledBooster:
    """Compile the XGBoost pipeline (``Pipeline([derive?, ColumnTransformer, TransformedTargetRegressor(XGBRegressor)])``)."""
    derive, encode, model, log_target = parts.derive, parts.encode, parts.model, parts.log_target
    if not isinstance(model, XGBRegressor):
        raise NotCompilable(f"the regressor is {type(model).__name__}, not XGBRegressor")
    if parts.band is not None:
        raise NotCompilable("a capped XGBoost pipeline is compiled only as a blend")
    if not (model.missing is None or (isinstance(model.missing, float) and math.isnan(model.missing))):
        raise NotCompilable(f"XGBoost's missing value is {model.missing!r}, not NaN")

    derived = dict(derive.functions_) if derive is not None else {}
    numeric_names = _numeric_features(encode, features)
    n_numeric = len(numeric_names)
    if numeric_names != features[:n_numeric]:
        raise NotCompilable("the fast path needs numeric features first in the record")
    numeric_index = {name: i for i, name in enumerate([*numeric_names, *derived])}
    layout: list[int | _Categorical] = []
    output_names: list[str] = []
    for name, transformer, columns in encode.transformers_:
        if transformer == "drop" or len(columns) == 0:
            continue
        if not all(isinstance(column, str) for column in columns):
            raise NotCompilable(f"transformer {name!r} selects columns by position")
        if transformer == "passthrough" or _is_identity(transformer):
            for column in columns:
                if column not in numeric_index:
                    raise NotCompilable(f"passthrough column {column!r} is not numeric")
                layout.append(numeric_index[column])
                output_names.append(column)
        elif isinstance(transformer, OrdinalEncoder):
            layout.extend(_ordinal_columns(transformer, columns, features))
            output_names.extend(columns)
        else:
            raise NotCompilable(f"transformer {name!r} is a {type(transformer).__name__}")
    booster = serving_booster(model, len(layout), "the encoder gives", threads)
    return CompiledBooster(
        features=features,
        n_numeric=n_numeric,
        derived=derived,
        derived_inputs=derived_sources(derive, features),
        layout=layout,
        output_names=output_names,
        booster=booster,
        iteration_range=model._get_iteration_range(None),
        log_target=log_target,
    )


def _numeric_features(encode: ColumnTransformer, features: list[str]) -> list[str]:
    """Input features the encoder does not ordinal-encode (they must lead the record)."""
    categorical = {
        column
        for _, transformer, columns in encode.transformers_
        if isinstance(transformer, OrdinalEncoder)
        for column in columns
    }
    return [name for name in features if name not in categorical]


def _is_identity(transformer: Any) -> bool:
    return isinstance(transformer, FunctionTransformer) and transformer.func is None and transformer.inverse_func is None


def _ordinal_columns(encoder: OrdinalEncoder, columns: Sequence[str], features: list[str]) -> list[_Categorical]:
    if encoder.handle_unknown != "use_encoded_value":
        raise NotCompilable("an OrdinalEncoder that raises on unknown categories is not compiled")
    missing_code = float(encoder.encoded_missing_value)
    compiled = []
    for column, categories in zip(columns, encoder.categories_, strict=True):
        if column not in features:
            raise NotCompilable(f"encoded column {column!r} is not an input feature")
        codes = {
            category: float(code)
            for code, category in enumerate(categories)
            if not (isinstance(category, float) and math.isnan(category))
        }
        compiled.append(
            _Categorical(
                source=features.index(column), codes=codes, unknown=float(encoder.unknown_value), missing=missing_code
            )
        )
    return compiled


def build_predictor(pipeline: Any, features: Sequence[str], *, threads: int = 1) -> Predictor:
    """The compiled fast path when the pipeline allows it, the pipeline itself otherwise."""
    try:
        return compile_pipeline(pipeline, features, threads=threads)
    except NotCompilable:
        return PipelinePredictor(pipeline, list(features))
