"""What the compiled inference paths share: their base class, their refusal, and two readers of the fitted pipeline.

:mod:`serving.fast_path` (the XGBoost pipeline, and the entry point :func:`serving.fast_path.compile_pipeline`)
and :mod:`serving.blend` (the kernel ridge + XGBoost blend) both build on this module, so neither imports the other's
internals: ``fast_path`` only hands a blend to :func:`serving.blend.compile_blend`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import xgboost as xgb
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
