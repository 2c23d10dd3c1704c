"""Multivariate drift: how badly a PCA fitted on the reference reconstructs a new batch (as NannyML's).

Features that each keep their own distribution can still change together (a larger house
in a cheaper neighbourhood): the per-feature report misses that, a PCA of the reference does
not. Numeric columns are imputed with the reference's medians, categorical ones encoded as
their reference frequency (an unseen category: 0); all are standardised, and the principal
components that explain :data:`EXPLAINED_VARIANCE` of the reference's variance are kept. A
row's reconstruction error is the Euclidean distance between its standardised values and
their projection back from those components; a batch's error is the mean over its rows.

The threshold is learned on the reference, as NannyML does: the reference is cut into
:data:`REFERENCE_CHUNKS` chunks in its row order, and a batch drifts when its error is
above the chunks' mean plus three standard deviations. A chunk's spread shrinks with its
size, so the band is scaled by ``sqrt(chunk rows / batch rows)``: a month of fifty sales is
judged against the spread of fifty-row chunks, a million-row batch against its own.
Batches above :data:`MAX_ROWS` rows are measured on an even sample of that many rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

#: Share of the reference's variance the kept components explain (NannyML's default).
EXPLAINED_VARIANCE = 0.65
#: Chunks the reference is cut into to learn the threshold.
REFERENCE_CHUNKS = 10
#: Standard deviations above the reference chunks' mean error that count as drift.
SIGMAS = 3.0
#: Fewest reference rows a model is fitted on (two per chunk).
MIN_REFERENCE_ROWS = 2 * REFERENCE_CHUNKS
#: Rows of a batch (and of the reference, for fitting) measured; larger ones are sampled evenly.
MAX_ROWS = 100_000


@dataclass(frozen=True)
class ReconstructionModel:
    """The reference's imputation, encoding, scaling and principal components, and its error's chunk statistics."""

    numeric: list[str]
    categorical: list[str]
    medians: list[float]
    frequencies: dict[str, dict[str, float]]
    mean: list[float]
    scale: list[float]
    components: list[list[float]]
    reference_error: float
    chunk_sd: float
    chunk_rows: int

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> ReconstructionModel:
        frame = _even_sample(frame, MAX_ROWS)
        if len(frame) < MIN_REFERENCE_ROWS:
            raise ValueError(f"the reference has {len(frame)} rows; a multivariate model needs {MIN_REFERENCE_ROWS}")
        raw = np.column_stack([_float(frame, name) for name in numeric]) if numeric else np.empty((len(frame), 0))
        medians = np.nan_to_num(np.nanmedian(raw, axis=0)) if numeric else np.empty(0)
        frequencies = {
            name: {str(key): float(value) for key, value in frame[name].astype(str).value_counts(normalize=True).items()}
            for name in categorical
        }
        partial = cls(list(numeric), list(categorical), medians.tolist(), frequencies, [], [], [], 0.0, 0.0, 0)
        encoded = partial._encoded(frame)
        mean, scale = encoded.mean(axis=0), encoded.std(axis=0)
        scale[scale == 0] = 1.0
        standard = (encoded - mean) / scale
        _, singular, vectors = np.linalg.svd(standard, full_matrices=False)
        explained = np.cumsum(singular**2) / max(float(np.sum(singular**2)), 1e-12)
        keep = int(np.searchsorted(explained, EXPLAINED_VARIANCE) + 1)
        model = cls(
            list(numeric), list(categorical), medians.tolist(), frequencies, mean.tolist(), scale.tolist(),
            vectors[:keep].tolist(), 0.0, 0.0, 0,
        )
        errors = model.row_errors(frame)
        chunks = np.array_split(errors, REFERENCE_CHUNKS)
        chunk_means = np.array([chunk.mean() for chunk in chunks])
        return cls(**{**asdict(model), "reference_error": float(chunk_means.mean()),
                      "chunk_sd": float(chunk_means.std(ddof=1)), "chunk_rows": len(frame) // REFERENCE_CHUNKS})

    @classmethod
    def from_dict(cls, stored: dict) -> ReconstructionModel:
        return cls(**stored)

    def to_dict(self) -> dict:
        return asdict(self)

    def row_errors(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's distance from its reconstruction (in standardised units)."""
        standard = (self._encoded(frame) - np.asarray(self.mean)) / np.asarray(self.scale)
        components = np.asarray(self.components)
        rebuilt = standard @ components.T @ components
        return np.sqrt(((standard - rebuilt) ** 2).sum(axis=1))

    def threshold(self, rows: int) -> float:
        """The error above which a batch of ``rows`` rows has drifted."""
        return self.reference_error + SIGMAS * self.chunk_sd * np.sqrt(self.chunk_rows / max(rows, 1))

    def measure(self, frame: pd.DataFrame) -> dict[str, float | int | bool]:
        """The batch's mean reconstruction error, the threshold for its size and whether it drifted."""
        if frame.empty:
            raise ValueError("no rows to measure multivariate drift on")
        sample = _even_sample(frame, MAX_ROWS)
        error = float(self.row_errors(sample).mean())
        threshold = float(self.threshold(len(sample)))
        return {"error": error, "threshold": threshold, "reference_error": self.reference_error,
                "components": len(self.components), "rows": len(sample), "drifted": error > threshold}

    def _encoded(self, frame: pd.DataFrame) -> np.ndarray:
        columns = []
        for name, median in zip(self.numeric, self.medians, strict=True):
            values = _float(frame, name)
            columns.append(np.where(np.isnan(values), median, values))
        for name in self.categorical:
            table = self.frequencies[name]
            columns.append(frame[name].astype(str).map(table).fillna(0.0).to_numpy(dtype=np.float64))
        return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def _float(frame: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _even_sample(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """At most ``rows`` rows of ``frame``, evenly spaced in its order."""
    if len(frame) <= rows:
        return frame
    return frame.iloc[np.linspace(0, len(frame) - 1, rows).astype(np.int64)]
