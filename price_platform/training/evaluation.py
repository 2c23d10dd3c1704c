"""The challenger and the current champion measured on the same holdout rows, and the gate's verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from price_platform.datasets import DatasetSpec
from price_platform.registry.champion import ChampionModel
from price_platform.registry.promotion import Verdict, beats
from price_platform.training.behaviour import behaviour_failures
from price_platform.training.metrics import (
    interval_coverage,
    regression_metrics,
    segment_metrics,
)


@dataclass(frozen=True)
class Evaluation:
    """Holdout measures of a challenger and of the champion it would replace (``None``: no champion)."""

    challenger_version: str
    champion_version: str | None
    challenger: dict[str, float]
    champion: dict[str, float] | None
    segments: pd.DataFrame
    behaviour_failures: list[str] = field(default_factory=list)

    def verdict(self, margin: float) -> Verdict:
        """Passes when the challenger behaves, has finite metrics and beats the champion's RMSLE by ``margin``."""
        figures = {f"challenger_{k}": v for k, v in self.challenger.items()}
        figures.update({f"champion_{k}": v for k, v in (self.champion or {}).items()})
        if self.behaviour_failures:
            return Verdict(False, "behaviour tests failed: " + "; ".join(self.behaviour_failures), figures)
        bad = sorted(k for k, v in self.challenger.items() if not math.isfinite(v))
        if bad:
            return Verdict(False, f"challenger metrics are not finite: {bad}", figures)
        challenger = self.challenger["rmsle"]
        champion = None if self.champion is None else self.champion["rmsle"]
        if champion is None:
            return Verdict(True, f"no champion yet; challenger holdout RMSLE {challenger:.5f}", figures)
        if beats(challenger, champion, margin):
            return Verdict(True, f"holdout RMSLE {challenger:.5f} beats champion's {champion:.5f} by margin {margin:.1%}", figures)
        return Verdict(
            False, f"holdout RMSLE {challenger:.5f} does not beat champion's {champion:.5f} by margin {margin:.1%}", figures
        )

    def table(self) -> pd.DataFrame:
        """Overall measures of both models side by side."""
        rows = {"challenger " + self.challenger_version: self.challenger}
        if self.champion is not None:
            rows[f"champion {self.champion_version}"] = self.champion
        return pd.DataFrame(rows).T


def evaluate(spec: DatasetSpec, holdout: pd.DataFrame, challenger: ChampionModel, champion: ChampionModel | None) -> Evaluation:
    """Measure both models on ``holdout`` (overall, per segment, interval coverage) and run the behaviour tests."""
    actual = holdout[spec.target].to_numpy(float)
    measured: dict[str, dict[str, float]] = {}
    segments = []
    for role, model in (("challenger", challenger), ("champion", champion)):
        if model is None:
            continue
        predicted = model.pipeline.predict(holdout[spec.features])
        measured[role] = {
            **regression_metrics(actual, predicted),
            "interval_coverage": interval_coverage(actual, predicted, model.interval_log_halfwidth),
        }
        segments.append(segment_metrics(holdout, actual, predicted, list(spec.segments)).assign(model=f"{role} {model.version}"))
    return Evaluation(
        challenger_version=challenger.version,
        champion_version=None if champion is None else champion.version,
        challenger=measured["challenger"],
        champion=measured.get("champion"),
        segments=pd.concat(segments, ignore_index=True),
        behaviour_failures=behaviour_failures(challenger.pipeline, spec, holdout.head(200)),
    )
