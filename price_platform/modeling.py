"""The model as one scikit-learn estimator: derived features, encoding and the regressor.

The fitted :class:`~sklearn.pipeline.Pipeline` built here is what is logged, registered and
served. Its input is a DataFrame with exactly the columns of ``DatasetSpec.features``; it
computes the data set's derived features itself, so there is no second copy of the
preprocessing anywhere else (serving's fast path is *derived* from the fitted object).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
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
    """Adds the data set's derived features (``name -> expression``) as new columns."""

    def __init__(self, expressions: dict[str, str] | None = None) -> None:
        self.expressions = expressions

    def fit(self, X: pd.DataFrame, y: Any = None) -> DerivedFeatures:  # noqa: N803 (sklearn naming)
        self.functions_ = {name: compile_expression(text) for name, text in (self.expressions or {}).items()}
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:  # noqa: N803
        frame = X.copy()
        for name, function in self.functions_.items():
            frame[name] = function(X).astype("float64")
        return frame

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([*self.feature_names_in_, *self.functions_], dtype=object)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("functions_", None)  # closures do not pickle: rebuilt from the expressions
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "feature_names_in_" in state:
            self.functions_ = {name: compile_expression(text) for name, text in (self.expressions or {}).items()}


def numeric_inputs(spec: DatasetSpec) -> list[str]:
    """Numeric columns the encoder sees: the spec's numeric features, then the derived ones."""
    return [*spec.numeric, *spec.derived]


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
    """Ridge regression on scaled numerics and one-hot categoricals, on log(price)."""
    encode = ColumnTransformer(
        [
            ("numeric", StandardScaler(), numeric_inputs(spec)),
            ("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=5), list(spec.categorical)),
        ]
    )
    model = TransformedTargetRegressor(regressor=Ridge(alpha=alpha), func=np.log, inverse_func=np.exp)
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
