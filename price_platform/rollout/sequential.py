"""An always-valid sequential comparison of two models' live errors on the same requests.

Each paired observation is ``d = e_champion² - e_challenger²``, the difference of squared log
errors on one request whose price is known (positive: the challenger was closer). Ordering by
mean squared log error is ordering by RMSLE. The test keeps a confidence sequence for the mean
of ``d``: intervals that cover it at *every* sample count simultaneously with probability
``1 - alpha``, so it may be looked at after every piece of feedback and stopped whenever it
decides, without the inflation of a peeked fixed-sample t-test.

The boundary is Robbins' two-sided normal mixture in the form of Howard, Ramdas, McAuliffe and
Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic confidence sequences", *Annals of
Statistics* 49(2), eq. (14), with the variance replaced by the running sample variance as in
the asymptotic confidence sequences of Waudby-Smith, Arnold, Wu, McAuliffe and Ramdas (2024),
"Time-uniform central limit theory and asymptotic confidence sequences", *Annals of
Statistics* 52(6), Theorem 2.2 (radius ``s_t * sqrt(2(t rho² + 1) / (t² rho²) * log(sqrt(t rho² + 1)
/ alpha))``, ``rho`` chosen to make it tightest at ``tuned_for`` pairs). Being asymptotic, the
guarantee is approached as pairs accumulate: no decision is taken before ``min_pairs``, and
``benchmarks/rollout.py`` measures the false promotion rate by simulation.

Decisions: **promote** once the interval lies above 0 (the challenger's RMSLE is lower),
**roll back** once it lies below 0 (it is higher) or when ``max_pairs`` pairs have not shown it
better (a budget: an equal challenger is not kept forever), **wait** otherwise. The decision is
taken at the first sample count that crosses, so replaying the same pairs gives the same answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Decision(StrEnum):
    """What the gate does with the challenger."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"
    WAIT = "wait"


@dataclass(frozen=True)
class SequentialTest:
    """The confidence sequence's level and the sample counts it decides between."""

    alpha: float = 0.05
    min_pairs: int = 50
    tuned_for: int = 2_000
    max_pairs: int | None = 50_000

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_pairs < 2 or self.tuned_for < 1:
            raise ValueError(f"min_pairs must be >= 2 and tuned_for >= 1, got {self.min_pairs} and {self.tuned_for}")
        if self.max_pairs is not None and self.max_pairs < self.min_pairs:
            raise ValueError(f"max_pairs ({self.max_pairs}) must be at least min_pairs ({self.min_pairs})")

    @property
    def rho_squared(self) -> float:
        """The mixture's precision, making the radius smallest at ``tuned_for`` pairs (Waudby-Smith et al., eq. 2.7)."""
        log_alpha = -2.0 * math.log(self.alpha)
        return (log_alpha + math.log(log_alpha + 1.0)) / self.tuned_for

    def radius(self, counts: np.ndarray, std: np.ndarray) -> np.ndarray:
        """Half-width of the confidence sequence after ``counts`` pairs of sample standard deviation ``std``."""
        t = counts.astype(float)
        rho2 = self.rho_squared
        return std * np.sqrt(2.0 * (t * rho2 + 1.0) / (t * t * rho2) * np.log(np.sqrt(t * rho2 + 1.0) / self.alpha))

    def bounds(self, differences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bound of the mean difference after each pair (NaN before two pairs).

        ``differences`` may be one sequence or a 2-D array of independent sequences (one per row).
        """
        d = np.asarray(differences, dtype=float)
        counts = np.arange(1, d.shape[-1] + 1)
        total = np.cumsum(d, axis=-1)
        squares = np.cumsum(d * d, axis=-1)
        mean = total / counts
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = np.maximum(squares - counts * mean * mean, 0.0) / (counts - 1)
            half = self.radius(counts, np.sqrt(variance))
        if d.shape[-1]:
            half[..., 0] = np.nan
        return mean - half, mean + half

    def decide(self, differences: np.ndarray) -> Outcome:
        """The decision on one sequence of paired differences, taken at the first count that crosses."""
        d = np.asarray(differences, dtype=float)
        if d.ndim != 1:
            raise ValueError(f"decide takes one sequence of differences, got shape {d.shape}")
        if not np.all(np.isfinite(d)):
            raise ValueError("paired differences must be finite numbers")
        if len(d) == 0:
            return Outcome(Decision.WAIT, 0, 0, math.nan, math.nan, math.nan)
        lower, upper = self.bounds(d)
        index, decision = first_crossing(lower, upper, self.min_pairs, self.max_pairs)
        return Outcome(
            decision=decision,
            pairs=index + 1,
            seen=len(d),
            mean_difference=float(d[: index + 1].mean()),
            lower=float(lower[index]),
            upper=float(upper[index]),
        )


def first_crossing(
    lower: np.ndarray, upper: np.ndarray, min_pairs: int, max_pairs: int | None
) -> tuple[int, Decision]:
    """Index and decision of the first count from ``min_pairs`` on whose interval excludes 0 (or hits the budget)."""
    eligible = np.arange(len(lower)) >= min_pairs - 1
    above = np.flatnonzero(eligible & (lower > 0))
    below = np.flatnonzero(eligible & (upper < 0))
    first_above = above[0] if len(above) else len(lower)
    first_below = below[0] if len(below) else len(lower)
    budget = max_pairs - 1 if max_pairs is not None else len(lower)
    first = min(first_above, first_below, budget)
    if first >= len(lower):
        return len(lower) - 1, Decision.WAIT
    if first == first_above:
        return int(first), Decision.PROMOTE
    return int(first), Decision.ROLLBACK


@dataclass(frozen=True)
class Outcome:
    """A decision with the figures it was taken on (``pairs`` counted up to the decision)."""

    decision: Decision
    pairs: int
    seen: int
    mean_difference: float
    lower: float
    upper: float

    def as_metrics(self) -> dict[str, float]:
        """The figures as written to the deployment row's metrics."""
        return {
            "pairs": float(self.pairs),
            "pairs_seen": float(self.seen),
            "mean_sq_log_error_difference": self.mean_difference,
            "cs_lower": self.lower,
            "cs_upper": self.upper,
        }


def squared_log_errors(predictions: np.ndarray, actuals: np.ndarray) -> np.ndarray:
    """``(log actual - log prediction)²`` per request (the terms of RMSLE)."""
    return (np.log(actuals) - np.log(predictions)) ** 2
