"""Drift statistics of a new batch of records against a reference summarised once, vectorised with numpy.

A reference is reduced to small per-column statistics (:class:`Reference`), computed once per
reference window and stored (``reference_store``), so a report reads and sorts only the new
batch. A numeric column keeps a quantile sketch: its distinct values when there are at most
:data:`SKETCH_POINTS` of them (the statistics are then exact), else the values at
:data:`SKETCH_POINTS` evenly spaced quantiles, each with the reference's count below and at
or below it. A categorical column keeps its categories and their counts.

Numeric columns get the population stability index (PSI, over the reference's decile bins)
and the two-sample Kolmogorov-Smirnov statistic with its asymptotic p-value (the largest CDF
gap over the sketch's points: exact on a full sketch, within ``1 / SKETCH_POINTS`` of it on a
quantile sketch); categorical columns get PSI, the Jensen-Shannon distance (base 2) and the
chi-square test's p-value. Every statistic is computed on whole columns (sort,
``searchsorted``, ``bincount``); there is no Python loop over rows.

A column has drifted when its shift is both large (PSI at or above the threshold) and
unlikely to be chance (the test's p-value below ``p_value``): PSI alone flags noise on the
few dozen sales of a month, a p-value alone flags trivial shifts on large batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

#: Share given to an empty bin, so that PSI stays finite (the convention Evidently uses too).
EMPTY_BIN_SHARE = 1e-4
#: Bins of the numeric PSI: the reference's deciles.
PSI_BINS = 10
#: Points of a numeric column's quantile sketch; a column with at most this many distinct values keeps them all.
SKETCH_POINTS = 1000
#: Effective sample size above which the KS p-value uses Kolmogorov's limiting distribution.
EXACT_KS_LIMIT = 10_000
#: Columns of the table :func:`compare` returns.
REPORT_COLUMNS = ["feature", "kind", "psi", "ks", "ks_p", "js", "chi2_p", "reference_rows", "current_rows", "drifted"]


class DriftInputError(ValueError):
    """A batch that cannot be compared with the reference, with the reason."""


@dataclass(frozen=True)
class NumericReference:
    """One numeric column of the reference as a quantile sketch (see the module docstring).

    ``points`` are sorted and distinct; ``below`` and ``at_or_below`` count the reference's
    values ``<`` and ``<=`` each point; ``psi_edges`` are the decile bin edges (among the points).
    """

    points: np.ndarray
    below: np.ndarray
    at_or_below: np.ndarray
    psi_edges: np.ndarray
    rows: int

    @classmethod
    def from_values(cls, values: np.ndarray) -> NumericReference:
        ordered = np.sort(values[~np.isnan(values)])
        if ordered.size == 0:
            empty = np.empty(0)
            return cls(empty, empty.astype(np.int64), empty.astype(np.int64), empty, 0)
        psi_edges = np.unique(ordered[(np.linspace(0, 1, PSI_BINS + 1)[1:-1] * (ordered.size - 1)).astype(np.int64)])
        distinct = 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))
        if distinct <= SKETCH_POINTS:
            points = np.unique(ordered)
        else:
            levels = np.linspace(0, 1, SKETCH_POINTS + 1)
            points = np.union1d(ordered[(levels * (ordered.size - 1)).astype(np.int64)], psi_edges)
        return cls(
            points=points,
            below=np.searchsorted(ordered, points, side="left"),
            at_or_below=np.searchsorted(ordered, points, side="right"),
            psi_edges=psi_edges,
            rows=int(ordered.size),
        )

    @property
    def shares(self) -> np.ndarray:
        """The reference's share in each PSI bin (``(-inf, e1), [e1, e2), ..., [e9, inf)``)."""
        below = self.below[np.searchsorted(self.points, self.psi_edges)]
        return np.diff(below, prepend=0, append=self.rows) / self.rows


@dataclass(frozen=True)
class CategoricalReference:
    """One categorical column of the reference: its categories and their counts."""

    categories: pd.Index
    counts: np.ndarray

    @classmethod
    def from_values(cls, values: pd.Series) -> CategoricalReference:
        codes, categories = pd.factorize(values, use_na_sentinel=True)
        return cls(pd.Index(categories), np.bincount(codes[codes >= 0], minlength=len(categories)))


@dataclass(frozen=True)
class Reference:
    """The statistics of a reference (the champion's training rows) per column, and its row count.

    ``target`` is the sketch of the target when the reference frame had it.
    """

    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    rows: int
    target: NumericReference | None = None

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, numeric: Iterable[str], categorical: Iterable[str], target: str | None = None
    ) -> Reference:
        numeric, categorical = list(numeric), list(categorical)
        missing = sorted(set(numeric).union(categorical) - set(frame.columns))
        if missing:
            raise DriftInputError(f"the reference lacks the columns {missing}")
        return cls(
            numeric={name: NumericReference.from_values(_float_column(frame, name)) for name in numeric},
            categorical={name: CategoricalReference.from_values(frame[name]) for name in categorical},
            rows=len(frame),
            target=NumericReference.from_values(_float_column(frame, target))
            if target is not None and target in frame else None,
        )


def psi(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    expected = np.clip(reference_shares, EMPTY_BIN_SHARE, None)
    actual = np.clip(current_shares, EMPTY_BIN_SHARE, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_statistic(reference: NumericReference, current_sorted: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic over the sketch's points, and its asymptotic p-value.

    Between two sketch points the reference's CDF moves by at most the mass between them and
    the batch's CDF is monotone, so the largest gap is found at a point (``<=``) or just below
    one (``<``); with every distinct reference value among the points this is exactly
    ``scipy.stats.ks_2samp``'s statistic. Integer arithmetic (gaps scaled by ``n*m``) keeps it exact.
    """
    n, m = reference.rows, current_sorted.size
    below = np.searchsorted(current_sorted, reference.points, side="left")
    at_or_below = np.searchsorted(current_sorted, reference.points, side="right")
    gap = max(
        int(np.abs(reference.below * m - below * n).max()), int(np.abs(reference.at_or_below * m - at_or_below * n).max())
    )
    statistic = gap / (n * m)
    effective = n * m / (n + m)
    if effective > EXACT_KS_LIMIT:  # the limiting distribution: exact to 1e-3 here, and 1000x cheaper
        return statistic, float(stats.kstwobign.sf(statistic * np.sqrt(effective)))
    return statistic, float(stats.kstwo.sf(statistic, round(effective)))


def numeric_drift(reference: NumericReference, current: np.ndarray) -> dict[str, float | None]:
    """PSI, Kolmogorov-Smirnov and the row count of one numeric column (NaNs left out)."""
    values = np.sort(current[~np.isnan(current)])
    if reference.rows == 0 or values.size == 0:
        return {"psi": None, "ks": None, "ks_p": None, "current_rows": int(values.size)}
    counts = np.diff(np.searchsorted(values, reference.psi_edges, side="left"), prepend=0, append=values.size)
    statistic, p_value = ks_statistic(reference, values)
    return {
        "psi": psi(reference.shares, counts / values.size), "ks": statistic, "ks_p": p_value,
        "current_rows": int(values.size),
    }


def categorical_counts(reference: CategoricalReference, current: pd.Series) -> np.ndarray:
    """Counts of the current values per reference category, plus a last count of unseen ones (nulls left out).

    The batch is factorised once (hashing each value once); only its distinct values are then
    looked up among the reference's categories.
    """
    codes, uniques = pd.factorize(current, use_na_sentinel=True)
    present = codes[codes >= 0]
    per_unique = np.bincount(present, minlength=len(uniques))
    position = reference.categories.get_indexer(pd.Index(uniques))
    known = position >= 0
    counts = np.bincount(position[known], weights=per_unique[known], minlength=len(reference.categories))
    return np.append(counts, per_unique[~known].sum()).astype(np.int64)


def categorical_drift(reference: CategoricalReference, current: pd.Series) -> dict[str, float | None]:
    """PSI, Jensen-Shannon distance, chi-square p-value and the row count of one categorical column."""
    current_counts = categorical_counts(reference, current)
    reference_counts = np.append(reference.counts, 0)
    rows = int(current_counts.sum())
    if reference_counts.sum() == 0 or rows == 0:
        return {"psi": None, "js": None, "chi2_p": None, "current_rows": rows}
    reference_shares = reference_counts / reference_counts.sum()
    current_shares = current_counts / current_counts.sum()
    seen = (reference_counts + current_counts) > 0
    table = np.vstack([reference_counts[seen], current_counts[seen]])
    chi2_p = 1.0 if table.shape[1] < 2 else float(stats.chi2_contingency(table, correction=False).pvalue)
    middle = (reference_shares + current_shares) / 2
    divergence = 0.5 * (_kl(reference_shares, middle) + _kl(current_shares, middle))
    return {
        "psi": psi(reference_shares, current_shares),
        "js": float(np.sqrt(max(divergence, 0.0))),
        "chi2_p": chi2_p,
        "current_rows": rows,
    }


def compare(
    reference: Reference, current: pd.DataFrame, *, psi_threshold: float, p_value: float = 0.05
) -> pd.DataFrame:
    """One row per column of the reference: statistics, row counts and whether it drifted."""
    missing = sorted(set(reference.numeric).union(reference.categorical) - set(current.columns))
    if missing:
        raise DriftInputError(f"the batch to compare lacks the reference's columns {missing}")
    rows = []
    for name, column in reference.numeric.items():
        found = numeric_drift(column, _float_column(current, name))
        drifted = found["psi"] is not None and found["psi"] >= psi_threshold and found["ks_p"] < p_value
        rows.append({"feature": name, "kind": "numeric", **found, "reference_rows": column.rows,
                     "drifted": bool(drifted)})
    for name, column in reference.categorical.items():
        found = categorical_drift(column, current[name])
        drifted = found["psi"] is not None and found["psi"] >= psi_threshold and found["chi2_p"] < p_value
        rows.append({"feature": name, "kind": "categorical", **found, "reference_rows": int(column.counts.sum()),
                     "drifted": bool(drifted)})
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def _float_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / q[mask])))
