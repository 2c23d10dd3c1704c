"""The model as one scikit-learn estimator: derived features, encoding and the regressor.

The fitted :class:`~sklearn.pipeline.Pipeline` built here is what is logged, registered and
served. Its input is a DataFrame with exactly the columns of ``DatasetSpec.features``; it
computes the data set's derived features itself, so there is no second copy of the
preprocessing anywhere else (serving's fast path is *derived* from the fitted object).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import VotingRegressor
from sklearn.impute import SimpleImputer
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder
from sklearn.utils import Tags, assert_all_finite, check_consistent_length
from sklearn.utils.validation import (
    _check_feature_names_in,
    _check_sample_weight,
    _check_y,
    _num_samples,
    check_is_fitted,
    validate_data,
)
from xgboost import XGBRegressor

from price_platform.datasets import DatasetSpec

_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def compile_expression(expression: str) -> Callable[[Mapping[str, Any]], Any]:
    """Turn an arithmetic expression over column names into a function of a column mapping.

    Only names, numbers, ``+ - * /``, unary minus and parentheses are allowed: the same text
    is valid SQL, which is how dbt computes the same feature. The function works on pandas
    Series, numpy arrays and plain numbers alike.
    """

    def build(node: ast.AST) -> Callable[[Mapping[str, Any]], Any]:
        if isinstance(node, ast.Expression):
            return build(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right, op = build(node.left), build(node.right), _OPERATORS[type(node.op)]
            return lambda columns: op(left(columns), right(columns))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = build(node.operand)
            return lambda columns: -inner(columns)
        if isinstance(node, ast.Name):
            name = node.id
            return lambda columns: columns[name]
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            value = node.value
            return lambda columns: value
        raise ValueError(f"unsupported element {ast.dump(node)!r} in derived feature {expression!r}")

    return build(ast.parse(expression, mode="eval"))


class DerivedFeatures(TransformerMixin, BaseEstimator):
    """Adds the data set's derived features (``name -> expression``) as new columns.

    Its input is a DataFrame, kept as one (categorical columns stay as they are): expressions
    name its columns, and a frame may carry columns it was not fitted on (they pass through).
    Without expressions it is the identity, on a frame or an array.
    """

    def __init__(self, expressions: dict[str, str] | None = None) -> None:
        self.expressions = expressions

    def fit(self, X: Any, y: Any = None) -> DerivedFeatures:  # noqa: N803 (sklearn naming)
        validate_data(self, X, skip_check_array=isinstance(X, pd.DataFrame), dtype=None, ensure_all_finite=False)
        if self.expressions and not hasattr(self, "feature_names_in_"):
            raise ValueError(f"derived features {sorted(self.expressions)} name columns: X must be a DataFrame with named columns")
        self.functions_ = self._compiled()
        return self

    def transform(self, X: Any) -> Any:  # noqa: N803
        check_is_fitted(self)
        frame = isinstance(X, pd.DataFrame) and hasattr(self, "feature_names_in_")
        if frame:
            # columns by name, as ColumnTransformer reads a frame: extra columns pass (an unused column does not change the answer)
            missing = [column for column in self.feature_names_in_ if column not in X.columns]
            if missing:
                raise ValueError(f"columns are missing: {missing}")
        else:
            X = validate_data(self, X, reset=False, dtype=None, ensure_all_finite=False)  # noqa: N806
        if self.functions_ and not frame:
            raise ValueError(f"derived features {sorted(self.functions_)} name columns: X must be a DataFrame with named columns")
        derived = X.copy()
        for name, function in self.functions_.items():
            derived[name] = function(X).astype("float64")
        return derived

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        return np.asarray([*_check_feature_names_in(self, input_features), *self.functions_], dtype=object)

    def _compiled(self) -> dict[str, Callable[[Mapping[str, Any]], Any]]:
        return {name: compile_expression(text) for name, text in (self.expressions or {}).items()}

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values pass through, as in the tables
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: BaseEstimator hands out the instance's own __dict__
        state.pop("functions_", None)  # closures do not pickle: rebuilt from the expressions
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "n_features_in_" in state or "feature_names_in_" in state:
            self.functions_ = self._compiled()


def numeric_inputs(spec: DatasetSpec) -> list[str]:
    """Numeric columns the encoder sees: the spec's numeric features, then the derived ones."""
    return [*spec.numeric, *spec.derived]


def grows_with_area(spec: DatasetSpec) -> set[str]:
    """The area column and the derived features that grow with it (``total = <area column> + ...``).

    A tree model is monotone in the area only if it is monotone in all of them.
    """
    if not spec.area_column:
        return set()
    ones = dict.fromkeys(spec.numeric, 1.0)
    larger = {**ones, spec.area_column: 2.0}
    derived = {name: compile_expression(text) for name, text in spec.derived.items()}
    return {spec.area_column} | {name for name, function in derived.items() if function(larger) > function(ones)}


def build_xgboost_pipeline(spec: DatasetSpec, params: Mapping[str, Any] | None = None, *, threads: int = 1) -> Pipeline:
    """Derived features -> ordinal-encoded categoricals -> XGBoost on log(price)."""
    encode = ColumnTransformer(
        [
            ("numeric", "passthrough", numeric_inputs(spec)),
            (
                "categorical",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=-1,
                    encoded_missing_value=-1,
                    dtype=np.float32,
                ),
                list(spec.categorical),
            ),
        ],
        verbose_feature_names_out=False,
    )
    settings = {
        "n_estimators": 600,
        "learning_rate": 0.05,
        "max_depth": 4,
        "subsample": 0.8,
        "colsample_bytree": 0.5,
        "tree_method": "hist",
        "n_jobs": threads,
        "random_state": 0,
        **dict(params or {}),
    }
    regressor = XGBRegressor(**settings)
    model = TransformedTargetRegressor(regressor=regressor, func=np.log, inverse_func=np.exp)
    return Pipeline([("derive", DerivedFeatures(dict(spec.derived))), ("encode", encode), ("model", model)])


def build_ridge_baseline(spec: DatasetSpec, alpha: float = 10.0) -> Pipeline:
    """Ridge regression on scaled numerics (gaps filled with the median, as the blend does) and one-hot categoricals, on log(price)."""
    encode = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric_inputs(spec)),
            ("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=5), list(spec.categorical)),
        ]
    )
    model = TransformedTargetRegressor(regressor=Ridge(alpha=alpha), func=np.log, inverse_func=np.exp)
    return Pipeline([("derive", DerivedFeatures(dict(spec.derived))), ("encode", encode), ("model", model)])


#: XGBoost settings of the blend before tuning (the study's search space is centred on them),
#: chosen on the Ames validation windows (the 6 months before the holdout, and the 6 before those).
XGBOOST_DEFAULTS: dict[str, Any] = {
    "n_estimators": 1200,
    "learning_rate": 0.04,
    "max_depth": 5,
    "min_child_weight": 1.0,
    "subsample": 0.6,
    "colsample_bytree": 0.3,
    "reg_lambda": 1.0,
}
KERNEL_DEFAULTS: dict[str, Any] = {"alpha": 0.5, "degree": 2, "coef0": 2.5}
#: The kernel ridge's share of the blend's vote before a study learns it (the trees have the rest;
#: chosen on the same validation windows; the study learns it per data set, :mod:`price_platform.training.study`).
KERNEL_WEIGHT = 0.6

#: Encoded column groups each member of the blend reads (prefixes of the encoder's outputs).
#: The trees read the one-hot columns rather than ordinal codes of the categories (mean
#: validation RMSLE of the two windows 0.1018 -> 0.1003 over five seeds, both windows better).
LINEAR_GROUPS = ("numeric", "log", "quality", "onehot")
TREE_GROUPS = ("numeric", "quality", "onehot", "segment")


class OrderedScores(TransformerMixin, BaseEstimator):
    """Ordered categories as their scores from the data set description (``order``); values not listed score 0."""

    def __init__(self, scales: dict[str, dict[str, float]] | None = None) -> None:
        self.scales = scales

    def fit(self, X: pd.DataFrame, y: Any = None) -> OrderedScores:  # noqa: N803 (sklearn naming)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        missing = [column for column in self.feature_names_in_ if column not in (self.scales or {})]
        if missing:
            raise ValueError(f"no order given for the ordered column(s) {missing}")
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:  # noqa: N803
        scales = self.scales or {}
        return X.apply(lambda column: column.map(lambda value: scales[column.name].get(value, 0.0))).astype("float64")

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.feature_names_in_, dtype=object)


def ordered_scales(spec: DatasetSpec) -> dict[str, dict[str, float]]:
    """Score of each value of every ordered categorical column (``order`` in the data set description)."""
    return {name: column.scores for name, column in spec.categorical.items() if column.scores is not None}


class BoundedKernelRidge(KernelRidge):
    """Exact :class:`~sklearn.kernel_ridge.KernelRidge` whose inputs are clipped to the training range of each column.

    A polynomial kernel grows without bound outside the rows it was fitted on: a record ten
    times the largest training area got a log price of 40. Clipped to ``input_min_`` and
    ``input_max_`` (stored with the fitted model), such a record is priced as the nearest edge
    of the training box, and records inside it are predicted as by plain kernel ridge.
    """

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> BoundedKernelRidge:  # noqa: N803 (sklearn naming)
        rows = validate_data(self, X, dtype=np.float64)  # dense only: clipping would fill a sparse matrix
        super().fit(X, y, sample_weight=sample_weight)
        seen = rows[_check_sample_weight(sample_weight, rows) != 0]  # rows of weight 0 take no part in the fit, nor in the range
        self.input_min_, self.input_max_ = seen.min(axis=0), seen.max(axis=0)
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        check_is_fitted(self)
        rows = validate_data(self, X, reset=False, dtype=np.float64)
        return self._get_kernel(np.clip(rows, self.input_min_, self.input_max_), self.X_fit_) @ self.dual_coef_

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class NystroemKernelRidge(RegressorMixin, BaseEstimator):
    """Polynomial kernel ridge on ``n_components`` landmark rows (Nystroem): time and memory linear in the rows.

    It predicts ``sum_j dual_coef_[j] * k(x, X_fit_[j])`` over the landmark rows ``X_fit_`` (a
    seeded sample of the training rows), the same form as :class:`~sklearn.kernel_ridge.KernelRidge`
    over all rows, with ``k(x, y) = (gamma x.y + coef0)^degree``. Fitting is ridge regression on
    the Nystroem features ``Z = k(X, C) K_CC^(-1/2)`` (eigenvalues of ``K_CC`` below rounding
    left out): ``Z'Z`` and ``Z'y`` are summed ``chunk_rows`` rows at a time, so no n x n or
    n x ``n_components`` matrix is ever held, and the dual coefficients are
    ``K_CC^(-1/2) (Z'Z + alpha I)^(-1) Z'y``. With as many landmarks as rows it is exact kernel ridge.
    Like :class:`BoundedKernelRidge` it clips the inputs it predicts to the training range of each
    column (``input_min_``, ``input_max_``).
    """

    kernel = "polynomial"

    def __init__(
        self,
        alpha: float = 1.0,
        degree: int = 2,
        coef0: float = 1.0,
        gamma: float | None = None,
        n_components: int = 1000,
        chunk_rows: int = 8_192,
        random_state: int = 0,
    ) -> None:
        self.alpha = alpha
        self.degree = degree
        self.coef0 = coef0
        self.gamma = gamma
        self.n_components = n_components
        self.chunk_rows = chunk_rows
        self.random_state = random_state

    def _kernel(self, rows: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        kernel = rows @ landmarks.T
        kernel *= self.gamma_
        kernel += self.coef0
        kernel **= self.degree
        return kernel

    def _chunks(self, X: Any) -> Iterator[tuple[int, np.ndarray]]:  # noqa: N803
        """(first row, finite float64 rows) of ``X`` ``chunk_rows`` at a time: a frame is never converted whole."""
        for start in range(0, len(X), self.chunk_rows):
            chunk = _float_rows(X, slice(start, start + self.chunk_rows))
            assert_all_finite(chunk, input_name="X", estimator_name=type(self).__name__)
            yield start, chunk

    def _validated(self, X: Any, *, reset: bool) -> Any:  # noqa: N803
        """``X`` checked: a frame for its column names and width (its values a chunk at a time), anything else as a float64 array."""
        frame = isinstance(X, pd.DataFrame)
        X = validate_data(self, X, reset=reset, skip_check_array=frame, dtype=np.float64)  # noqa: N806
        if frame and len(X) == 0:
            raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
        return X

    def fit(self, X: Any, y: Any) -> NystroemKernelRidge:  # noqa: N803
        X = self._validated(X, reset=True)  # noqa: N806
        target = np.asarray(_check_y(y, y_numeric=True, estimator=self), dtype=np.float64)
        check_consistent_length(X, target)
        rows, width = X.shape
        self.gamma_ = 1.0 / width if self.gamma is None else float(self.gamma)
        chosen = np.sort(np.random.default_rng(self.random_state).choice(rows, size=min(self.n_components, rows), replace=False))
        landmarks = np.ascontiguousarray(_float_rows(X, chosen))
        eigenvalues, vectors = np.linalg.eigh(self._kernel(landmarks, landmarks))
        kept = eigenvalues > eigenvalues.max(initial=0.0) * len(eigenvalues) * np.finfo(np.float64).eps
        whiten = vectors[:, kept] / np.sqrt(eigenvalues[kept])
        gram, moment = np.zeros((whiten.shape[1],) * 2), np.zeros(whiten.shape[1])
        self.input_min_, self.input_max_ = np.full(width, np.inf), np.full(width, -np.inf)
        for start, chunk in self._chunks(X):
            np.minimum(self.input_min_, chunk.min(axis=0, initial=np.inf), out=self.input_min_)
            np.maximum(self.input_max_, chunk.max(axis=0, initial=-np.inf), out=self.input_max_)
            features = self._kernel(chunk, landmarks) @ whiten
            gram += features.T @ features
            moment += features.T @ target[start : start + len(chunk)]
        gram[np.diag_indices_from(gram)] += self.alpha
        self.X_fit_ = landmarks
        self.dual_coef_ = whiten @ scipy.linalg.solve(gram, moment, assume_a="pos")
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        check_is_fitted(self)
        X = self._validated(X, reset=False)  # noqa: N806
        parts = [
            self._kernel(np.clip(chunk, self.input_min_, self.input_max_), self.X_fit_) @ self.dual_coef_
            for _, chunk in self._chunks(X)
        ]
        return np.concatenate(parts or [np.zeros(0)])


def _float_rows(X: Any, rows: slice | np.ndarray) -> np.ndarray:  # noqa: N803
    """The given rows of a frame or array as one float64 array."""
    part = X.iloc[rows] if isinstance(X, pd.DataFrame) else X[rows]
    return np.asarray(part, dtype=np.float64)


class ExactOrNystroemKernelRidge(RegressorMixin, BaseEstimator):
    """Polynomial kernel ridge chosen by the number of training rows when it is fitted.

    Up to ``exact_rows`` rows it fits the exact :class:`BoundedKernelRidge`, above them
    :class:`NystroemKernelRidge` on ``n_components`` landmark rows; the fitted one is
    ``estimator_``, and it predicts. Either clips its inputs to their training range.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        degree: int = 2,
        coef0: float = 1.0,
        gamma: float | None = None,
        exact_rows: int = 10_000,
        n_components: int = 1000,
        random_state: int = 0,
    ) -> None:
        self.alpha = alpha
        self.degree = degree
        self.coef0 = coef0
        self.gamma = gamma
        self.exact_rows = exact_rows
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> ExactOrNystroemKernelRidge:  # noqa: N803 (sklearn naming)
        y = _check_y(y, y_numeric=True, estimator=self)  # one target, as the Nystroem kind fits
        kernel = {"alpha": self.alpha, "degree": self.degree, "coef0": self.coef0, "gamma": self.gamma}
        if _num_samples(X) <= self.exact_rows:
            estimator: BoundedKernelRidge | NystroemKernelRidge = BoundedKernelRidge(kernel="polynomial", **kernel)
        else:
            estimator = NystroemKernelRidge(**kernel, n_components=self.n_components, random_state=self.random_state)
        self.estimator_ = estimator.fit(X, y)
        self.n_features_in_ = estimator.n_features_in_
        if hasattr(estimator, "feature_names_in_"):
            self.feature_names_in_ = estimator.feature_names_in_
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        check_is_fitted(self)
        return self.estimator_.predict(X)

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # neither kind clips a sparse matrix
        return tags


def kernel_member(spec: DatasetSpec, params: Mapping[str, Any] | None = None, *, seed: int = 0) -> ExactOrNystroemKernelRidge:
    """The blend's kernel ridge: exact up to ``model.exact_kernel_rows`` training rows, Nystroem above (decided in its fit)."""
    settings = {**KERNEL_DEFAULTS, **dict(params or {})}
    return ExactOrNystroemKernelRidge(
        **settings, exact_rows=spec.model.exact_kernel_rows, n_components=spec.model.kernel_components, random_state=seed
    )


class SkewedColumns:
    """A ``ColumnTransformer`` column selector: which of ``columns`` are non-negative and skewed beyond ``threshold``.

    The encoder calls it on the rows it is fitted on and keeps the answer in its fitted
    ``transformers_`` (the way :func:`~sklearn.compose.make_column_selector` works).
    """

    def __init__(self, columns: list[str], threshold: float = 0.5) -> None:
        self.columns = columns
        self.threshold = threshold

    def __call__(self, X: pd.DataFrame) -> list[str]:  # noqa: N803 (sklearn naming)
        skew = X[self.columns].skew()
        return [c for c in self.columns if skew[c] > self.threshold and X[c].min() >= 0]

    def __repr__(self) -> str:
        return f"SkewedColumns(columns={self.columns!r}, threshold={self.threshold!r})"


def log1p_nonnegative(frame: pd.DataFrame) -> pd.DataFrame:
    """``log(1 + x)`` of sizes and counts (negative or missing values count as 0)."""
    return np.log1p(frame.astype("float64").clip(lower=0).fillna(0))


class EncodedColumns(TransformerMixin, BaseEstimator):
    """Selects the encoder's output columns whose names match ``pattern``: one member's inputs, copied once.

    (A ``ColumnTransformer`` passthrough with pandas output made several transient copies of
    the selection, the largest allocation of a fit on a large table.)
    """

    def __init__(self, pattern: str = "") -> None:
        self.pattern = pattern

    def fit(self, X: Any, y: Any = None) -> EncodedColumns:  # noqa: N803
        validate_data(self, X, skip_check_array=isinstance(X, pd.DataFrame), dtype=None, ensure_all_finite=False)
        # an array's columns are named as scikit-learn names them: x0, x1, ...
        self.columns_ = [column for column in _check_feature_names_in(self, None) if re.match(self.pattern, column)]
        return self

    def transform(self, X: Any) -> Any:  # noqa: N803
        check_is_fitted(self)
        by_name = isinstance(X, pd.DataFrame) and hasattr(self, "feature_names_in_")
        X = validate_data(self, X, reset=False, skip_check_array=by_name, dtype=None, ensure_all_finite=False)  # noqa: N806
        return X[self.columns_] if by_name else X[:, self._positions()]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        return _check_feature_names_in(self, input_features)[self._positions()]

    def _positions(self) -> list[int]:
        """Positions of the selected columns among those it was fitted on."""
        chosen = set(self.columns_)
        return [i for i, name in enumerate(_check_feature_names_in(self, None)) if name in chosen]

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a selection: missing values pass
        tags.input_tags.string = True
        return tags


def _group_columns(groups: tuple[str, ...], leave_out: tuple[str, ...] = ()) -> EncodedColumns:
    """Selects the encoded columns of ``groups``, except the encoded columns named in ``leave_out``."""
    skip = f"(?!(?:{'|'.join(map(re.escape, leave_out))})$)" if leave_out else ""
    return EncodedColumns(pattern=f"^{skip}(?:{'|'.join(groups)})__")


class BandedTargetRegressor(TransformedTargetRegressor):
    """A :class:`~sklearn.compose.TransformedTargetRegressor` whose prices are capped to a band of the training target.

    The band is ``[lowest training price / band_factor, highest * band_factor]`` (``band_``,
    stored with the fitted model): a record inside every column's range can still be
    physically impossible (one dimension ten times the others) and extrapolate to any price;
    its answer is then the band's edge, and serving flags it as capped.
    """

    def __init__(
        self,
        regressor: Any = None,
        *,
        transformer: Any = None,
        func: Callable[..., Any] | None = None,
        inverse_func: Callable[..., Any] | None = None,
        check_inverse: bool = True,
        band_factor: float = 2.0,
    ) -> None:
        super().__init__(regressor=regressor, transformer=transformer, func=func, inverse_func=inverse_func, check_inverse=check_inverse)
        self.band_factor = band_factor

    def fit(self, X: Any, y: Any, **fit_params: Any) -> BandedTargetRegressor:  # noqa: N803
        super().fit(X, y, **fit_params)
        target = np.asarray(y, dtype=np.float64)
        self.band_ = (float(target.min()) / self.band_factor, float(target.max()) * self.band_factor)
        return self

    def predict(self, X: Any, **predict_params: Any) -> np.ndarray:  # noqa: N803
        return np.clip(super().predict(X, **predict_params), *self.band_)


def build_blend_pipeline(
    spec: DatasetSpec,
    xgboost_params: Mapping[str, Any] | None = None,
    kernel_params: Mapping[str, Any] | None = None,
    *,
    threads: int = 1,
    seed: int = 0,
    kernel_weight: float = KERNEL_WEIGHT,
) -> Pipeline:
    """Derived features -> one encoder -> weighted mean of kernel ridge and XGBoost on log(price), capped.

    The pipeline is unfitted and needs no data to be built: what depends on the training rows
    is decided when it is fitted (which numeric columns are skewed enough to be logged,
    :class:`SkewedColumns`; by the number of rows, which kernel ridge the blend gets,
    :class:`ExactOrNystroemKernelRidge`). The data set's ``model.family`` decides whether it
    has a kernel ridge (``xgboost``: the trees alone). The encoder's outputs are named
    ``<group>__<column>``; the kernel ridge reads the scaled numerics (except the sale's year
    and month: a polynomial would extrapolate them into the unseen months it is asked about),
    logs, ordered categories' scores and one-hot columns; XGBoost the numerics, scores, one-hot
    columns and target-encoded segments. XGBoost is monotone increasing in the area column and
    the derived features that grow with it (:func:`grows_with_area`); with
    ``model.area_monotone: blend`` the kernel ridge does not read those columns either, so the
    whole blend is monotone in the area. The log predictions are averaged, the kernel ridge's
    with the share ``kernel_weight`` (which a study learns; 0 leaves the trees alone), and prices
    capped to the training target's band (:class:`BandedTargetRegressor`).
    """
    scales = ordered_scales(spec)
    encode = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric_inputs(spec)),
            (
                "log",
                Pipeline([("log1p", FunctionTransformer(log1p_nonnegative, feature_names_out="one-to-one")), ("scale", StandardScaler())]),
                SkewedColumns(numeric_inputs(spec)),
            ),
            ("quality", Pipeline([("score", OrderedScores(scales)), ("scale", StandardScaler())]), list(scales)),
            # 0/1 are exact in float32: half the memory of the widest block, the same numbers
            (
                "onehot",
                OneHotEncoder(handle_unknown="ignore", min_frequency=10, sparse_output=False, dtype=np.float32),
                list(spec.categorical),
            ),
            ("segment", TargetEncoder(target_type="continuous", cv=KFold(n_splits=5, shuffle=True, random_state=seed)),
             list(spec.segments)),
        ],
        sparse_threshold=0.0,
    ).set_output(transform="pandas")
    xgboost_settings = {
        **XGBOOST_DEFAULTS,
        "tree_method": "hist",
        "n_jobs": threads,
        "random_state": seed,
        **dict(xgboost_params or {}),
    }
    growing = sorted(grows_with_area(spec))
    if growing:
        xgboost_settings["monotone_constraints"] = {f"numeric__{name}": 1 for name in growing}
    trees = ("xgboost", Pipeline([("columns", _group_columns(TREE_GROUPS)), ("regressor", XGBRegressor(**xgboost_settings))]))
    if not 0.0 <= kernel_weight < 1.0:
        raise ValueError(f"kernel_weight must be in [0, 1): the trees keep a share of the vote, got {kernel_weight}")
    if spec.model.family == "xgboost" or kernel_weight == 0.0:
        members, weights = [trees], [1.0]
    else:
        unread = [f"numeric__{c}" for c in (spec.time.columns if spec.time else []) if c in spec.numeric]
        if spec.model.area_monotone == "blend":
            unread += [f"{group}__{name}" for name in growing for group in ("numeric", "log")]
        kernel = kernel_member(spec, kernel_params, seed=seed)
        members = [("kernel_ridge", Pipeline([("columns", _group_columns(LINEAR_GROUPS, tuple(unread))), ("regressor", kernel)])), trees]
        weights = [kernel_weight, 1.0 - kernel_weight]
    model = BandedTargetRegressor(
        regressor=VotingRegressor(members, weights=weights), func=np.log, inverse_func=np.exp, band_factor=spec.model.price_band_factor
    )
    return Pipeline([("derive", DerivedFeatures(dict(spec.derived))), ("encode", encode), ("model", model)])


def read_sample(spec: DatasetSpec) -> pd.DataFrame:
    """The data set's source file with normalised column names (for tests and benchmarks)."""
    from price_platform.datasets import normalise_column

    assert spec.source.path is not None, "the data set has no source file"
    frame = pd.read_csv(spec.source.path) if spec.source.path.suffix != ".parquet" else pd.read_parquet(spec.source.path)
    frame.columns = [normalise_column(c) for c in frame.columns]
    for column in spec.categorical:
        frame[column] = frame[column].astype("string").str.strip().astype(object).where(frame[column].notna(), None)
    return frame
