"""Drift statistics between a new batch of records and a reference, vectorised with numpy.

Numeric columns get the population stability index (PSI, over the reference's decile bins)
and the two-sample Kolmogorov-Smirnov statistic with its asymptotic p-value; categorical
columns get PSI, the Jensen-Shannon distance (base 2) and the chi-square test's p-value.
Every statistic is computed on whole columns (sort, ``searchsorted``, ``bincount``); there
is no Python loop over rows, so 100,000 rows by 20 columns take a fraction of a second.

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
#: Effective sample size above which the KS p-value uses Kolmogorov's limiting distribution.
EXACT_KS_LIMIT = 10_000
#: Columns of the table :func:`compare` returns.
REPORT_COLUMNS = ["feature", "kind", "psi", "ks", "ks_p", "js", "chi2_p", "reference_rows", "current_rows", "drifted"]


class DriftInputError(ValueError):
    """A batch that cannot be compared with the reference, with the reason."""


@dataclass(frozen=True)
class NumericReference:
    """One numeric column of the reference: its sorted values, PSI bin edges and bin shares."""

    values: np.ndarray
    edges: np.ndarray
    shares: np.ndarray

    @classmethod
    def from_values(cls, values: np.ndarray) -> NumericReference:
        ordered = np.sort(values[~np.isnan(values)])
        if ordered.size == 0:
            return cls(ordered, np.empty(0), np.empty(0))
        quantiles = np.linspace(0, 1, PSI_BINS + 1)[1:-1]
        edges = np.unique(ordered[(quantiles * (ordered.size - 1)).astype(np.int64)])
        counts = np.diff(np.searchsorted(ordered, edges, side="left"), prepend=0, append=ordered.size)
        return cls(ordered, edges, counts / ordered.size)


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
    """A prepared reference (the champion's training rows): sorted numerics, category counts."""

    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    rows: int

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, numeric: Iterable[str], categorical: Iterable[str]) -> Reference:
        numeric, categorical = list(numeric), list(categorical)
        missing = sorted(set(numeric).union(categorical) - set(frame.columns))
        if missing:
            raise DriftInputError(f"the reference lacks the columns {missing}")
        return cls(
            numeric={name: NumericReference.from_values(_float_column(frame, name)) for name in numeric},
            categorical={name: CategoricalReference.from_values(frame[name]) for name in categorical},
            rows=len(frame),
        )


def psi(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    expected = np.clip(reference_shares, EMPTY_BIN_SHARE, None)
    actual = np.clip(current_shares, EMPTY_BIN_SHARE, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_statistic(reference_sorted: np.ndarray, current_sorted: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value (as ``scipy.stats.ks_2samp``).

    Both empirical CDFs step only at observed values, so the largest gap is found at the last
    of each run of equal values of either sample: there one CDF is known from the position and
    the other from one ``searchsorted`` into the other sorted sample. Integer arithmetic
    (gaps scaled by ``n*m``) keeps it exact.
    """
    n, m = reference_sorted.size, current_sorted.size
    gaps = []
    for own, other, own_size, other_size in (
        (reference_sorted, current_sorted, n, m),
        (current_sorted, reference_sorted, m, n),
    ):
        last = np.flatnonzero(np.append(own[1:] != own[:-1], True))
        below_other = np.searchsorted(other, own[last], side="right")
        gaps.append(np.abs((last + 1) * other_size - below_other * own_size).max())
    statistic = float(max(gaps) / (n * m))
    effective = n * m / (n + m)
    if effective > EXACT_KS_LIMIT:  # the limiting distribution: exact to 1e-3 here, and 1000x cheaper
        return statistic, float(stats.kstwobign.sf(statistic * np.sqrt(effective)))
    return statistic, float(stats.kstwo.sf(statistic, round(effective)))


def numeric_drift(reference: NumericReference, current: np.ndarray) -> dict[str, float | None]:
    """PSI, Kolmogorov-Smirnov and the row count of one numeric column (NaNs left out)."""
    values = np.sort(current[~np.isnan(current)])
    if reference.values.size == 0 or values.size == 0:
        return {"psi": None, "ks": None, "ks_p": None, "current_rows": int(values.size)}
    counts = np.diff(np.searchsorted(values, reference.edges, side="left"), prepend=0, append=values.size)
    statistic, p_value = ks_statistic(reference.values, values)
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
        rows.append({"feature": name, "kind": "numeric", **found, "reference_rows": column.values.size,
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
