"""What the compiled inference paths share: their base class, their refusal, and two readers of the fitted pipeline.

:mod:`serving.fast_path` (the XGBoost pipeline) and :mod:`serving.blend` (the kernel ridge + XGBoost blend) both
build on this module and neither imports the other: :func:`compile_pipeline`, the entry point, takes the fitted
pipeline apart (:func:`pipeline_parts`) and hands it to one of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import VotingRegressor
from sklearn.pipeline import Pipeline
from xgboost import XGBRegressor

from price_platform.modeling import DerivedFeatures

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class NotCompilable(ValueError):
    """The fitted pipeline has a step the fast path does not know how to reproduce exactly."""


class CompiledPipeline:
    """A model compiled from its fitted pipeline: prices and per-feature explanations without scikit-learn."""

    fast: bool = True
    band: tuple[float, float] | None = None

    def predict(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        raise NotImplementedError

    def explain(self, row: tuple[Any, ...]) -> tuple[dict[str, float], dict[str, float], float, float]:
        """(per input feature, per model column, base value, log price); base + per-input sum = log price."""
        raise NotImplementedError


def serving_booster(model: XGBRegressor, columns: int, source: str, threads: int) -> xgb.Booster:
    """The fitted regressor's booster, set to ``threads``; ``NotCompilable`` unless it reads ``columns`` inputs.

    ``source`` names what feeds it in the message (``"the encoder gives"``, ``"the member selects"``).
    """
    booster = model.get_booster()
    if booster.num_features() != columns:
        raise NotCompilable(f"the booster expects {booster.num_features()} columns, {source} {columns}")
    booster.set_param({"nthread": threads})
    return booster


def derived_sources(derive: DerivedFeatures | None, features: list[str]) -> dict[str, list[str]]:
    """Input features each derived feature's expression names."""
    expressions = dict(derive.expressions or {}) if derive is not None else {}
    return {
        name: [source for source in dict.fromkeys(_NAME.findall(text)) if source in features]
        for name, text in expressions.items()
    }


@dataclass(frozen=True)
class PipelineParts:
    """The steps of a fitted ``Pipeline([derive?, ColumnTransformer, TransformedTargetRegressor(regressor)])``."""

    derive: DerivedFeatures | None
    encode: ColumnTransformer
    model: Any  # the fitted regressor inside the target transform
    log_target: bool
    band: tuple[float, float] | None  # BandedTargetRegressor: prices capped to the training target's band


def pipeline_parts(pipeline: Any) -> PipelineParts:
    """Take a fitted pipeline apart; ``NotCompilable`` unless it has the shape the compilers read."""
    if not isinstance(pipeline, Pipeline):
        raise NotCompilable(f"expected a scikit-learn Pipeline, got {type(pipeline).__name__}")
    steps = [step for _, step in pipeline.steps if step not in (None, "passthrough")]
    derive = steps.pop(0) if steps and isinstance(steps[0], DerivedFeatures) else None
    if len(steps) != 2 or not isinstance(steps[0], ColumnTransformer):
        raise NotCompilable(f"expected [DerivedFeatures], ColumnTransformer, regressor; got {[type(s).__name__ for s in steps]}")
    encode, model = steps
    log_target = False
    band = getattr(model, "band_", None)
    if isinstance(model, TransformedTargetRegressor):
        if model.transformer is not None or (model.func, model.inverse_func) not in ((np.log, np.exp), (None, None)):
            raise NotCompilable("only a log/exp (or identity) target transform is compiled")
        log_target = model.func is np.log
        model = model.regressor_
    return PipelineParts(derive, encode, model, log_target, band)


def compile_pipeline(pipeline: Any, features: Sequence[str], *, threads: int = 1) -> CompiledPipeline:
    """Compile the XGBoost pipeline (:mod:`serving.fast_path`) or the blend (:mod:`serving.blend`).

    Both compilers build on this module, so they are imported here, when first used: neither
    imports the other.
    """
    from serving.blend import compile_blend
    from serving.fast_path import compile_booster

    parts = pipeline_parts(pipeline)
    if isinstance(parts.model, VotingRegressor):
        if not parts.log_target:
            raise NotCompilable("the blend is compiled only on a log target")
        return compile_blend(parts.derive, parts.encode, parts.model, list(features), threads=threads, band=parts.band)
    return compile_booster(parts, list(features), threads=threads)
