"""The compiled form of the blend: one encoder into numpy, then kernel ridge and the booster, averaged.

:func:`compile_blend` reads the fitted ``ColumnTransformer`` of
:func:`price_platform.modeling.build_blend_pipeline` (imputer medians, scaler means and
scales, the ``log1p`` transform and ordered categories' scores, one-hot categories with their
infrequent groups, ordinal codes, target encodings and their unknown-category means), the
fitted ``VotingRegressor`` (kernel ridge's training matrix -- or the Nystroem kernel ridge's
landmark rows -- dual coefficients and kernel parameters, the booster, the voting weights; a
blend of the trees alone has no kernel ridge) and the price band the answers are capped to
(``BandedTargetRegressor.band_``). :class:`CompiledBlend` then encodes records
with :class:`serving.encoder.EncoderPlan` and evaluates both members with plain numpy and
``booster.inplace_predict``. A step of any other kind raises :class:`NotCompilable`.

Kernel ridge predicts ``sum_i a_i k(x, x_i)`` over all *n* training rows. For the default
degree-2 polynomial kernel ``k(x, y) = (g x.y + c)^2`` that sum is exactly the quadratic form
``x' A x + b.x + a0`` with ``A = g^2 X' diag(a) X``, ``b = 2 g c X' a`` and ``a0 = c^2 sum(a)``,
computed once at compile time: a record then costs d^2 rather than n*d multiplications
(d = kernel columns, a few hundred; n = training rows, thousands). Other degrees evaluate
the kernel against the training rows.

A large batch is predicted in two parts by two threads (:meth:`CompiledBlend.predict`): both
members' arithmetic (a matrix product, then XGBoost's trees) runs without the interpreter
lock, so while one thread encodes the second part, which needs the lock, the other prices
the first.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import VotingRegressor
from sklearn.impute import SimpleImputer
from sklearn.kernel_ridge import KernelRidge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
    TargetEncoder,
)
from xgboost import XGBRegressor

from price_platform.modeling import (
    DerivedFeatures,
    EncodedColumns,
    ExactOrNystroemKernelRidge,
    NystroemKernelRidge,
    OrderedScores,
    log1p_nonnegative,
)
from serving.compiled import CompiledPipeline, NotCompilable, derived_sources, serving_booster
from serving.encoder import EncoderPlan, Numeric, Table, plan

#: Up to this many records are encoded one by one (numpy's per-call cost dominates below it).
ROW_BY_ROW = 6
#: Batches of at least this many records are predicted in two parts by two threads
#: (:meth:`CompiledBlend.predict`). Two parts, not more: every booster call has a fixed cost
#: (0.5-1 ms for 1,200 trees on the 2-core development hosts), and each part handed over makes
#: the threads trade the interpreter lock.
SPLIT_ROWS = 512


class HelperPlacement:
    """Keeps the second thread of large batches off the CPU of the thread that hands it work (Linux).

    Woken by the thread that then goes on encoding, the helper was otherwise queued on that
    thread's busy CPU (the scheduler places a woken thread near its waker) and waited there for
    milliseconds while the other CPU idled: measured on the 2-vCPU development hosts, 2.5-3 ms
    of a 1,000-record batch of about 30 ms.
    """

    def __init__(self) -> None:
        self.thread_id: int | None = None
        self.cpus: set[int] = set()
        self._libc = ctypes.CDLL(None) if sys.platform.startswith("linux") else None

    def remember(self) -> None:
        """The helper thread's initializer: note its id and the CPUs it may run on."""
        self.thread_id = threading.get_native_id()
        if self._libc is not None:
            self.cpus = os.sched_getaffinity(0)

    def keep_off_this_cpu(self) -> None:
        """Let the helper run on any of its CPUs but the one the calling thread is on now."""
        if self._libc is None or self.thread_id is None:
            return
        here = self._libc.sched_getcpu()
        if len(self.cpus) < 2 or here not in self.cpus:
            return
        try:
            os.sched_setaffinity(self.thread_id, self.cpus - {here})
        except OSError:  # not allowed here (a restricted container): leave placement to the scheduler
            self._libc = None


HELPER_PLACEMENT = HelperPlacement()
#: The second thread of large batches. A single-threaded XGBoost call at a time rather than
#: OpenMP threads: on a busy core a thread only waits its turn, where OpenMP's spinning
#: threads slowed XGBoost many times over.
MEMBERS_THREAD = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="blend-members", initializer=HELPER_PLACEMENT.remember
)
#: First guess of encoding's cost per record over both members' (measured on the Ames blend:
#: about 0.3); each split batch then updates it (:meth:`CompiledBlend.predict`).
ENCODE_OVER_MEMBERS = 0.3
#: Name of the kernel ridge member's (weighted) log prediction among ``/explain``'s contributions.
KERNEL_TERM = "kernel_ridge"


@dataclass(frozen=True)
class QuadraticForm:
    """``x' A x + b.x + a0`` for every row x of a matrix (A symmetric), with A kept as its eigenvectors.

    ``x' A x`` is the sum over A's eigenpairs of ``eigenvalue * (eigenvector . x)^2``, and only the
    numerically nonzero eigenvalues are kept: one-hot blocks make A singular (the Ames blend's
    is of rank 248 in 298 columns), so the matrix product is that much narrower than ``x' A``.
    """

    basis: np.ndarray  # one column per kept eigenvector
    eigenvalues: np.ndarray
    linear: np.ndarray
    constant: float

    @classmethod
    def of(cls, matrix: np.ndarray, linear: np.ndarray, constant: float) -> QuadraticForm:
        """The form of ``matrix``, without the eigenvalues below ``matrix_rank``'s tolerance."""
        eigenvalues, vectors = np.linalg.eigh(matrix)
        size = np.abs(eigenvalues)
        kept = size > size.max(initial=0.0) * len(size) * np.finfo(np.float64).eps
        return cls(np.ascontiguousarray(vectors[:, kept]), eigenvalues[kept], linear, constant)

    def __call__(self, columns: np.ndarray) -> np.ndarray:
        # Matrix products and a product: numpy releases the interpreter lock in each (einsum and
        # scipy's BLAS wrappers keep it), so this runs beside another thread's encoding.
        projected = columns @ self.basis
        projected *= projected
        values = projected @ self.eigenvalues
        values += columns @ self.linear
        values += self.constant
        return values


@dataclass(frozen=True)
class PolynomialKernel:
    """Kernel ridge with ``k(x, y) = (gamma x.y + coef0)^degree``: its training rows and dual coefficients."""

    fit_rows: np.ndarray
    dual: np.ndarray
    gamma: float
    coef0: float
    degree: float
    lower: np.ndarray | None = None  # inputs are clipped to [lower, upper] (the member's training range), if given
    upper: np.ndarray | None = None

    def clipped(self, columns: np.ndarray) -> np.ndarray:
        """``columns`` clipped to the member's training range, as its ``predict`` clips them."""
        return columns if self.lower is None else np.clip(columns, self.lower, self.upper)

    def quadratic(self) -> QuadraticForm | None:
        """The exact quadratic form of the kernel's prediction when the degree is 2, else ``None``."""
        if self.degree != 2:
            return None
        weighted = self.fit_rows.T * self.dual
        return QuadraticForm.of(
            self.gamma**2 * (weighted @ self.fit_rows),
            2.0 * self.gamma * self.coef0 * (self.fit_rows.T @ self.dual),
            self.coef0**2 * float(self.dual.sum()),
        )

    def against_rows(self, columns: np.ndarray) -> np.ndarray:
        """The prediction as scikit-learn computes it: the kernel against every training row."""
        kernel = columns @ self.fit_rows.T
        kernel *= self.gamma
        kernel += self.coef0
        kernel **= self.degree
        return kernel @ self.dual


@dataclass
class CompiledBlend(CompiledPipeline):
    """Derived features, encoder tables and both members of one fitted blend."""

    features: list[str]
    derived_inputs: dict[str, list[str]]
    encoder: EncoderPlan
    sources: list[str]  # per encoded column: the input (or derived) feature it comes from
    kernel_columns: np.ndarray
    kernel: PolynomialKernel | None  # None: the trees alone (``model.family: xgboost``)
    tree_columns: np.ndarray
    tree_names: list[str]
    booster: xgb.Booster
    iteration_range: tuple[int, int]
    weights: list[float] | None  # VotingRegressor.weights (None: plain mean), kernel ridge first
    band: tuple[float, float] | None = None  # prices are capped to it (BandedTargetRegressor.band_)
    fast: bool = True
    encode_over_members: float = ENCODE_OVER_MEMBERS
    _quadratic: QuadraticForm | None = field(init=False)
    _kernel_internal: np.ndarray = field(init=False)
    _tree_internal: np.ndarray = field(init=False)
    _shares: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        self._quadratic = None if self.kernel is None else self.kernel.quadratic()
        order = self.encoder.output_order  # the members' columns, picked straight from the internal layout
        self._kernel_internal = order[self.kernel_columns]
        self._tree_internal = order[self.tree_columns]
        self._shares = _shares(self.weights)

    def encode(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        """The encoder's float64 output, one row per record."""
        return self.encoder.encode_many(rows)[:, self.encoder.output_order]

    def members(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(kernel ridge, XGBoost) log predictions for an encoded matrix."""
        return self.member_outputs(matrix[:, self.kernel_columns], matrix[:, self.tree_columns])

    def member_outputs(self, kernel_columns: np.ndarray, tree_columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(kernel ridge, XGBoost) log predictions from the columns each member reads."""
        trees = self.booster.inplace_predict(
            np.ascontiguousarray(tree_columns, dtype=np.float32),
            iteration_range=self.iteration_range,
            missing=np.nan,
            validate_features=False,
        )
        return self.kernel_output(kernel_columns), trees

    def member_columns(self, rows: Sequence[tuple[Any, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """(kernel ridge's columns, the trees' columns in float32) of ``rows``, encoded on this thread.

        The trees' columns are taken (``np.take``: C order, as the booster reads them; indexing gives
        Fortran order) from the whole encoding cast to float32 at once: the same numbers as casting
        the picked float64 columns, in half the time (0.29 against 0.57 ms for 1,000 records).
        """
        internal = self.encoder.encode_few(rows) if len(rows) <= ROW_BY_ROW else self.encoder.encode_many(rows)
        return internal[:, self._kernel_internal], np.take(internal.astype(np.float32), self._tree_internal, axis=1)

    def kernel_output(self, kernel_columns: np.ndarray) -> np.ndarray:
        """Kernel ridge's log predictions (zeros for a blend of the trees alone)."""
        if self.kernel is None:
            return np.zeros(len(kernel_columns))
        quadratic, columns = self._quadratic, self.kernel.clipped(kernel_columns)
        return self.kernel.against_rows(columns) if quadratic is None else quadratic(columns)

    def blended(self, kernel: np.ndarray, trees: np.ndarray) -> np.ndarray:
        """Prices from both members' log predictions: weighted by their voting shares, exp, capped to the band."""
        margin = self._shares[0] * kernel
        margin += self._shares[1] * trees
        prices = np.exp(margin, out=margin)
        return prices if self.band is None else np.clip(prices, *self.band, out=prices)

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        """The blend's log price: the members weighted by their voting shares, as ``VotingRegressor.predict``."""
        kernel, trees = self.members(matrix)
        return self._shares[0] * kernel + self._shares[1] * trees

    def predict(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        """Prices of ``rows``; a large batch in two parts, by this thread and :data:`MEMBERS_THREAD`.

        Encoding needs the interpreter lock; kernel ridge and the booster do not. So this
        thread encodes the first part and hands its members to the other thread, then encodes
        and prices the second part itself. The cut balances the two: the other thread's members
        of the first part take as long as this thread's encoding and members of the second,
        with encoding's cost relative to the members' as measured on the batches before
        (:attr:`encode_over_members`). When the other thread is busy with another batch, this
        one prices the first part too. Records are independent: each gets the price a call
        with its part alone gives.
        """
        if len(rows) < SPLIT_ROWS:
            return self._prices(*self.member_columns(rows))
        ratio = self.encode_over_members
        cut = self.split_at(len(rows))
        first_kernel, first_trees = self.member_columns(rows[:cut])
        HELPER_PLACEMENT.keep_off_this_cpu()
        handed = MEMBERS_THREAD.submit(self._prices, first_kernel, first_trees)
        started = time.perf_counter()
        second = self.member_columns(rows[cut:])
        encoded = time.perf_counter()
        prices = self._prices(*second)
        members = time.perf_counter() - encoded
        self.encode_over_members = 0.8 * ratio + 0.2 * (encoded - started) / members
        first_prices = self._prices(first_kernel, first_trees) if handed.cancel() else handed.result()
        return np.concatenate([first_prices, prices])

    def split_at(self, count: int) -> int:
        """Where :meth:`predict` cuts a batch of ``count`` records: the other thread prices those before."""
        ratio = self.encode_over_members
        return round(count * (1 + ratio) / (2 + ratio))

    def _prices(self, kernel_columns: np.ndarray, tree_columns: np.ndarray) -> np.ndarray:
        return self.blended(*self.member_outputs(kernel_columns, tree_columns))

    def explain(self, row: tuple[Any, ...]) -> tuple[dict[str, float], dict[str, float], float, float]:
        """(per input feature, per model column, base value, log price) of one record.

        The booster's SHAP values and bias are scaled by its share of the vote; the kernel
        ridge member's log prediction, scaled by its share, is the one term ``kernel_ridge``.
        Base value plus all contributions is the blend's log price.
        """
        matrix = self.encode([row])
        kernel, _ = self.members(matrix)
        kernel_share, tree_share = self._shares
        contributions = self.booster.predict(
            xgb.DMatrix(matrix[:, self.tree_columns].astype(np.float32), missing=np.nan),
            pred_contribs=True,
            iteration_range=self.iteration_range,
            validate_features=False,
        )[0].astype(np.float64)
        per_column = {name: tree_share * value for name, value in zip(self.tree_names, contributions[:-1].tolist(), strict=True)}
        per_input = {name: 0.0 for name in self.features}
        for column, value in zip(self.tree_columns.tolist(), contributions[:-1].tolist(), strict=True):
            sources = self.derived_inputs.get(self.sources[column], [self.sources[column]])
            for source in sources:
                per_input[source] += tree_share * value / len(sources)
        kernel_term = kernel_share * float(kernel[0])
        if self.kernel is not None:
            per_column[KERNEL_TERM] = per_input[KERNEL_TERM] = kernel_term
        base = tree_share * float(contributions[-1])
        return per_input, per_column, base, base + kernel_term + tree_share * float(contributions[:-1].sum())


def _shares(weights: list[float] | None) -> tuple[float, float]:
    kernel, trees = weights if weights is not None else (1.0, 1.0)
    return kernel / (kernel + trees), trees / (kernel + trees)


def compile_blend(
    derive: DerivedFeatures | None,
    encode: ColumnTransformer,
    blend: VotingRegressor,
    features: list[str],
    *,
    threads: int,
    band: tuple[float, float] | None = None,
) -> CompiledBlend:
    """Compile ``ColumnTransformer -> VotingRegressor([kernel ridge pipeline?, XGBoost pipeline])``, prices capped to ``band``."""
    derived = dict(derive.functions_) if derive is not None else {}
    derived_inputs = derived_sources(derive, features)
    if KERNEL_TERM in features:
        raise NotCompilable(f"an input feature is named {KERNEL_TERM!r}")
    blocks, sources = _encoder_blocks(encode, features, [*features, *derived])
    names = list(encode.get_feature_names_out())
    if len(sources) != len(names):
        raise NotCompilable(f"the encoder gives {len(names)} columns, the compiled blocks {len(sources)}")
    order = [name for name, _ in blend.estimators]
    if order not in (["kernel_ridge", "xgboost"], ["xgboost"]):
        raise NotCompilable(f"the blend's members are {order}, not [kernel_ridge, xgboost] or [xgboost]")
    members = dict(zip(order, blend.estimators_, strict=True))
    weights = None if blend.weights is None else [float(w) for w in blend.weights]
    trees_columns, trees = _member(members["xgboost"], names, XGBRegressor)
    kernel: PolynomialKernel | None = None
    kernel_columns = np.zeros(0, dtype=np.intp)
    if "kernel_ridge" in members:
        kernel_columns, fitted = _member(members["kernel_ridge"], names, (ExactOrNystroemKernelRidge, KernelRidge, NystroemKernelRidge))
        if isinstance(fitted, ExactOrNystroemKernelRidge):  # the kind its fit chose (models registered before it: that kind)
            fitted = fitted.estimator_
        kernel = _polynomial(fitted, len(kernel_columns))
    else:
        weights = [0.0, 1.0]
    if not (trees.missing is None or (isinstance(trees.missing, float) and math.isnan(trees.missing))):
        raise NotCompilable(f"XGBoost's missing value is {trees.missing!r}, not NaN")
    booster = serving_booster(trees, len(trees_columns), "the member selects", threads)
    return CompiledBlend(
        features=features,
        derived_inputs=derived_inputs,
        encoder=plan(blocks, features, derived, derived_inputs),
        sources=sources,
        kernel_columns=kernel_columns,
        kernel=kernel,
        tree_columns=trees_columns,
        tree_names=[names[i] for i in trees_columns],
        booster=booster,
        iteration_range=trees._get_iteration_range(None),
        weights=weights,
        band=band,
    )


def _polynomial(fitted: KernelRidge | NystroemKernelRidge, width: int) -> PolynomialKernel:
    """The fitted kernel ridge (exact, or on Nystroem landmark rows) as its rows, dual coefficients and kernel."""
    if fitted.kernel != "polynomial" or getattr(fitted, "kernel_params", None):
        raise NotCompilable(f"kernel ridge's kernel is {fitted.kernel!r}, not a plain polynomial")
    if np.ndim(fitted.dual_coef_) != 1:
        raise NotCompilable("kernel ridge was fitted on more than one target")
    gamma = fitted.gamma_ if isinstance(fitted, NystroemKernelRidge) else fitted.gamma
    return PolynomialKernel(
        fit_rows=np.asarray(fitted.X_fit_, dtype=np.float64),
        dual=np.asarray(fitted.dual_coef_, dtype=np.float64),
        gamma=1.0 / width if gamma is None else float(gamma),
        coef0=float(fitted.coef0),
        degree=float(fitted.degree),
        lower=getattr(fitted, "input_min_", None),
        upper=getattr(fitted, "input_max_", None),
    )


def _member(member: Any, names: list[str], kind: type | tuple[type, ...]) -> tuple[np.ndarray, Any]:
    """(encoded column indices it reads, its fitted regressor) for one ``Pipeline([EncodedColumns, regressor])``."""
    if not isinstance(member, Pipeline) or len(member.steps) != 2 or not isinstance(member.steps[0][1], EncodedColumns):
        raise NotCompilable("a blend member is not Pipeline([EncodedColumns, regressor])")
    select, regressor = member.steps[0][1], member.steps[1][1]
    if not isinstance(regressor, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise NotCompilable(f"a blend member is a {type(regressor).__name__}, not {expected}")
    position = {name: i for i, name in enumerate(names)}
    if any(name not in position for name in select.columns_):
        raise NotCompilable("a blend member reads a column the encoder does not produce")
    return np.array([position[name] for name in select.columns_], dtype=np.intp), regressor


def _encoder_blocks(
    encode: ColumnTransformer, features: list[str], numeric_names: list[str]
) -> tuple[list[Numeric | Table], list[str]]:
    blocks: list[Numeric | Table] = []
    for name, transformer, columns in encode.transformers_:
        if transformer == "drop" or len(columns) == 0:
            continue
        if not all(isinstance(column, str) for column in columns):
            raise NotCompilable(f"transformer {name!r} selects columns by position")
        steps = [step for _, step in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]
        if isinstance(steps[-1], StandardScaler) and len(steps) == 2:
            mean, scale = _scaler(steps[-1], len(columns))
            first = steps[0]
            if isinstance(first, OrderedScores):
                for i, column in enumerate(columns):
                    blocks.append(_ordered_table(features, column, first.scales[column], mean[i], scale[i]))
            elif _is_function(first, log1p_nonnegative) or isinstance(first, SimpleImputer):
                _require_numeric(name, columns, numeric_names)
                log = not isinstance(first, SimpleImputer)
                fill = np.zeros(len(columns)) if log else _medians(first, name)
                blocks.append(Numeric(list(columns), fill, log, mean, scale))
            else:
                raise NotCompilable(f"transformer {name!r} starts with a {type(first).__name__}")
        elif len(steps) == 1 and isinstance(transformer, OneHotEncoder):
            blocks.extend(_one_hot_tables(transformer, columns, features))
        elif len(steps) == 1 and isinstance(transformer, OrdinalEncoder):
            blocks.extend(_ordinal_tables(transformer, columns, features))
        elif len(steps) == 1 and isinstance(transformer, TargetEncoder):
            blocks.extend(_target_tables(transformer, columns, features))
        else:
            raise NotCompilable(f"transformer {name!r} is a {type(transformer).__name__}")
    return blocks, [name for block in blocks for name in _names(block, features)]


def _names(block: Numeric | Table, features: list[str]) -> list[str]:
    """The feature each encoded column of ``block`` comes from."""
    return block.sources if isinstance(block, Numeric) else [features[block.source]] * block.table.shape[1]


def _is_function(step: Any, function: Callable[..., Any]) -> bool:
    return isinstance(step, FunctionTransformer) and step.func is function and step.inverse_func is None


def _require_numeric(name: str, columns: Sequence[str], numeric_names: list[str]) -> None:
    for column in columns:
        if column not in numeric_names:
            raise NotCompilable(f"transformer {name!r} reads {column!r}, which is not a feature")


def _scaler(scaler: StandardScaler, width: int) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros(width)
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones(width)
    return mean, scale


def _medians(imputer: SimpleImputer, name: str) -> np.ndarray:
    missing = imputer.missing_values
    if not (isinstance(missing, float) and math.isnan(missing)) or imputer.add_indicator:
        raise NotCompilable(f"transformer {name!r}: only a NaN imputer without indicator columns is compiled")
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    if np.isnan(statistics).any():
        raise NotCompilable(f"transformer {name!r}: a column had no value to impute from")
    return statistics


def _source(column: str, features: list[str]) -> int:
    if column not in features:
        raise NotCompilable(f"encoded column {column!r} is not an input feature")
    return features.index(column)


def _categories(categories: np.ndarray) -> tuple[dict[Any, int], int | None]:
    """(category -> position, position of a NaN category or None)."""
    rows: dict[Any, int] = {}
    nan_row = None
    for position, category in enumerate(categories):
        if isinstance(category, float) and math.isnan(category):
            nan_row = position
        else:
            rows[category] = position
    return rows, nan_row


def _table(source: int, categories: np.ndarray, values: np.ndarray, unknown: np.ndarray, missing: np.ndarray | None) -> Table:
    rows, nan_row = _categories(categories)
    n = len(categories)
    missing_values = values[nan_row] if nan_row is not None else (unknown if missing is None else missing)
    table = np.vstack([values, unknown[None, :], np.asarray(missing_values)[None, :]])
    return Table(source=source, rows=rows, unknown=n, missing=n + 1, table=table)


def _ordered_table(features: list[str], column: str, scores: dict[str, float], mean: float, scale: float) -> Table:
    """An ordered category's values scored by its ``order`` (anything else 0), then scaled: one value per category."""
    source = _source(column, features)
    values = np.array([[(score - mean) / scale] for score in scores.values()], dtype=np.float64)
    other = np.array([(0.0 - mean) / scale])
    return Table(source=source, rows={v: i for i, v in enumerate(scores)}, unknown=len(scores), missing=len(scores),
                  table=np.vstack([values, other[None, :]]))  # fmt: skip


def _one_hot_tables(encoder: OneHotEncoder, columns: Sequence[str], features: list[str]) -> list[Table]:
    if encoder.drop is not None or encoder.handle_unknown not in ("ignore", "infrequent_if_exist"):
        raise NotCompilable("only a OneHotEncoder without drop that ignores unknown categories is compiled")
    infrequent = getattr(encoder, "infrequent_categories_", [None] * len(columns))
    tables = []
    for column, categories, rare in zip(columns, encoder.categories_, infrequent, strict=True):
        rare_set = set() if rare is None else set(rare.tolist())
        frequent = [c for c in categories if c not in rare_set]
        width = len(frequent) + (1 if rare_set else 0)
        values = np.zeros((len(categories), width))
        for position, category in enumerate(categories):
            values[position, width - 1 if category in rare_set else frequent.index(category)] = 1.0
        unknown = np.zeros(width)
        if rare_set and encoder.handle_unknown == "infrequent_if_exist":
            unknown[-1] = 1.0
        tables.append(_table(_source(column, features), categories, values, unknown, None))
    return tables


def _ordinal_tables(encoder: OrdinalEncoder, columns: Sequence[str], features: list[str]) -> list[Table]:
    if encoder.handle_unknown != "use_encoded_value":
        raise NotCompilable("an OrdinalEncoder that raises on unknown categories is not compiled")
    missing = np.array([float(encoder.encoded_missing_value)])
    tables = []
    for column, categories in zip(columns, encoder.categories_, strict=True):
        values = np.arange(len(categories), dtype=np.float64)[:, None]
        _, nan_row = _categories(categories)
        if nan_row is not None:
            values[nan_row] = missing
        tables.append(_table(_source(column, features), categories, values, np.array([float(encoder.unknown_value)]), missing))
    return tables


def _target_tables(encoder: TargetEncoder, columns: Sequence[str], features: list[str]) -> list[Table]:
    """Encodings per category (one column per class for a multiclass target), the target mean if unknown."""
    per_feature = len(encoder.classes_) if encoder.target_type_ == "multiclass" else 1
    if encoder.target_type_ not in ("continuous", "binary", "multiclass"):
        raise NotCompilable(f"TargetEncoder for a {encoder.target_type_} target is not compiled")
    means = np.atleast_1d(np.asarray(encoder.target_mean_, dtype=np.float64))
    tables = []
    for index, (column, categories) in enumerate(zip(columns, encoder.categories_, strict=True)):
        encodings = encoder.encodings_[index * per_feature : (index + 1) * per_feature]
        values = np.column_stack([np.asarray(e, dtype=np.float64) for e in encodings])
        unknown = means if per_feature > 1 else means[:1]
        tables.append(_table(_source(column, features), categories, values, unknown, None))
    return tables
