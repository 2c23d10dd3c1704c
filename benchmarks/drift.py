"""Drift report speed: the platform's vectorised drift statistics beside Evidently's ``DataDriftPreset``.

Both sides get the same 100,000-row, 20-column reference and current frames (15 numeric and
5 categorical Ames columns, resampled with noise; the current one has moved areas and
prices) and produce per-column drift statistics. Times are the best of a few repeats; the
platform's time includes preparing the reference (sorting it), so nothing is precomputed.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from benchmarks.results import Result
from price_platform.datasets import load_dataset
from price_platform.modeling import read_sample
from price_platform.monitoring.drift import Reference, compare
from price_platform.settings import DEFAULT_DATASET

ROWS = 100_000
NUMERIC = [
    "lot_area", "year_built", "year_remod_add", "mas_vnr_area", "bsmt_unf_sf", "total_bsmt_sf", "first_flr_sf",
    "second_flr_sf", "gr_liv_area", "full_bath", "bedroom_abvgr", "totrms_abvgrd", "garage_area", "latitude",
    "sale_price",
]
CATEGORICAL = ["neighborhood", "bldg_type", "house_style", "sale_condition", "garage_type"]
COMMAND = "make bench BENCH=drift"


def frames(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames of ``ROWS`` rows resampled from the bundled sample."""
    sample = read_sample(load_dataset(DEFAULT_DATASET))[NUMERIC + CATEGORICAL]
    rng = np.random.default_rng(seed)

    def draw(shift: float) -> pd.DataFrame:
        frame = sample.iloc[rng.integers(0, len(sample), ROWS)].reset_index(drop=True)
        for name in NUMERIC:
            values = frame[name].to_numpy(dtype=float)
            frame[name] = values * rng.normal(1.0, 0.02, ROWS)
        for name in ("gr_liv_area", "first_flr_sf", "sale_price"):
            frame[name] = frame[name] * (1 + shift)
        return frame

    return draw(0.0), draw(0.15)


def platform_seconds(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    prepared = Reference.from_frame(reference, NUMERIC, CATEGORICAL)
    table = compare(prepared, current, psi_threshold=0.2)
    return time.perf_counter() - start, table


def evidently_seconds(reference: pd.DataFrame, current: pd.DataFrame) -> float:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    start = time.perf_counter()
    report = Report([DataDriftPreset()])
    report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    return time.perf_counter() - start


def run() -> list[Result]:
    reference, current = frames()
    ours, table = min((platform_seconds(reference, current) for _ in range(5)), key=lambda pair: pair[0])
    theirs = min(evidently_seconds(reference, current) for _ in range(2))
    drifted = sorted(table.loc[table["drifted"], "feature"])
    print(f"platform drift report: {ours:.3f} s, drifted columns {drifted}")
    print(f"evidently DataDriftPreset: {theirs:.3f} s; speed-up {theirs / ours:.1f}x")
    return [
        Result("drift_100k_seconds", ours, "s", "<= 1 s", ours <= 1.0, COMMAND),
        Result("drift_speedup_vs_evidently", theirs / ours, "x", ">= 20x vs Evidently", theirs / ours >= 20, COMMAND),
    ]


if __name__ == "__main__":
    run()
