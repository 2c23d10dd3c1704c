"""``price-platform synth``: realistic price data at any size, made from the bundled sample.

Records are resampled from the data set's source file month by month (so the seasonality
of the sample is kept), numeric columns get noise proportional to their spread (zeros stay
zero, values stay in the spec's range, integer columns stay integer, calendar-like integers
such as years are left alone), the target gets
multiplicative noise, and an optional drift ramps sizes and prices up over time. The
result is written as Parquet, one file per month (``synth-YYYY-MM.parquet``), into the
landing folder. Work is vectorised (numpy + pyarrow) and chunked, so memory is bounded by
the chunk size, not by the number of rows.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.modeling import read_sample
from price_platform.progress import RowProgress
from price_platform.settings import get_settings

log = logging.getLogger(__name__)

#: Rows generated (and written as one Parquet row group) at a time.
CHUNK_ROWS = 250_000
#: Rows per file for data sets without a time column (arrival batches).
BATCH_ROWS = 500_000


@dataclass(frozen=True)
class SynthOptions:
    """How much data to make and how it should differ from the sample."""

    rows: int
    drift: float = 0.0
    noise: float = 0.05
    seed: int = 0
    chunk_rows: int = CHUNK_ROWS


class SynthSource:
    """The sample as column arrays, ready to be resampled many times over."""

    def __init__(self, spec: DatasetSpec, sample: pd.DataFrame) -> None:
        missing = [column for column in spec.columns if column not in sample.columns]
        if missing:
            raise ValueError(f"the sample lacks columns of data set {spec.name!r}: {missing}")
        if len(sample) == 0:
            raise ValueError("the sample has no rows to resample")
        self.spec = spec
        self.sample = sample.reset_index(drop=True)
        self.numeric = {
            name: sample[name].to_numpy(dtype="float64", na_value=np.nan) for name in spec.numeric if name not in self._time_columns
        }
        self.spread = {name: self._noise_scale(name, values) for name, values in self.numeric.items()}
        self.categorical = {name: pa.array(sample[name], type=pa.string()).dictionary_encode() for name in spec.categorical}
        self.target = sample[spec.target].to_numpy(dtype="float64")
        self.months = self._sample_months()

    def _noise_scale(self, name: str, values: np.ndarray) -> float:
        """The column's spread; zero for calendar-like integers (years), whose noise would make nonsense."""
        spread, centre = float(np.nanstd(values)), float(np.nanmean(np.abs(values)))
        if self.spec.numeric[name].integer and spread < 0.1 * centre:
            return 0.0
        return spread

    @property
    def _time_columns(self) -> set[str]:
        return set(self.spec.time.columns) if self.spec.time else set()

    def _sample_months(self) -> np.ndarray | None:
        """Each sample row's month as ``YYYY*12 + month - 1`` (None without a time column)."""
        time = self.spec.time
        if time is None:
            return None
        if time.column:
            stamps = pd.to_datetime(self.sample[time.column])
            return (stamps.dt.year * 12 + stamps.dt.month - 1).to_numpy(dtype="int64")
        years = self.sample[time.year_column].to_numpy(dtype="int64")
        months = self.sample[time.month_column].to_numpy(dtype="int64")
        return years * 12 + months - 1

    def month_plan(self, rows: int) -> list[tuple[int, int]]:
        """(month, rows) for every month of the sample, shares as in the sample, summing to ``rows``."""
        assert self.months is not None
        months, counts = np.unique(self.months, return_counts=True)
        exact = rows * counts / counts.sum()
        planned = np.floor(exact).astype("int64")
        remainder = rows - planned.sum()
        planned[np.argsort(planned - exact)[:remainder]] += 1  # largest remainders first
        return [(int(m), int(n)) for m, n in zip(months, planned, strict=True) if n > 0]

    def chunk(
        self, picks: np.ndarray, ramp: np.ndarray, month: int | None, options: SynthOptions, rng: np.random.Generator,
        first_id: int,
    ) -> pa.Table:
        """Resampled rows ``picks`` with noise and drift (``ramp`` in [0, 1] per row)."""
        spec = self.spec
        n = len(picks)
        growth = 1.0 + options.drift * ramp
        columns: dict[str, pa.Array] = {}
        if spec.id_column:
            columns[spec.id_column] = pa.array(np.arange(first_id, first_id + n, dtype="int64"))
        if spec.time is not None and month is not None:
            year, month_number = divmod(month, 12)
            if spec.time.column:
                days = pd.Timestamp(year=year, month=month_number + 1, day=1).days_in_month
                stamps = np.datetime64(f"{year:04d}-{month_number + 1:02d}-01") + rng.integers(0, days, n).astype("timedelta64[D]")
                columns[spec.time.column] = pa.array(stamps.astype("datetime64[D]"))
            else:
                columns[spec.time.year_column] = pa.array(np.full(n, year, dtype="int64"))
                columns[spec.time.month_column] = pa.array(np.full(n, month_number + 1, dtype="int64"))
        for name, rule in spec.numeric.items():
            if name in columns:
                continue
            values = self.numeric[name][picks]
            noisy = values + rng.normal(0.0, options.noise * self.spread[name], n) * (values != 0)
            if options.drift and name in self.drifting:
                noisy = noisy * growth
            if rule.min is not None or rule.max is not None:
                noisy = np.clip(noisy, rule.min, rule.max)
            missing = np.isnan(noisy)
            if rule.integer:
                noisy = np.round(np.nan_to_num(noisy)).astype("int64")
            columns[name] = pa.array(noisy, mask=missing if missing.any() else None)
        for name, encoded in self.categorical.items():
            columns[name] = encoded.take(pa.array(picks)).dictionary_decode()
        price = self.target[picks] * np.exp(rng.normal(0.0, options.noise, n)) * growth
        columns[spec.target] = pa.array(np.round(price, 2))
        return pa.table({name: columns[name] for name in spec.columns if name in columns})

    @cached_property
    def drifting(self) -> set[str]:
        """Size-like columns that grow under drift: the area column and columns summed with it."""
        spec = self.spec
        if spec.area_column is None:
            return set()
        sized = {spec.area_column}
        for expression in spec.derived.values():
            names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression))
            if spec.area_column in names:
                sized |= names & set(spec.numeric)
        return sized


def generate(spec: DatasetSpec, sample: pd.DataFrame, options: SynthOptions) -> Iterator[tuple[str, Iterator[pa.Table]]]:
    """(file stem, its chunks) for each output file: one per month, or per arrival batch without time."""
    if options.rows < 1:
        raise ValueError(f"--rows must be at least 1, got {options.rows}")
    if options.drift < 0:
        raise ValueError(f"--drift must not be negative, got {options.drift}")
    source = SynthSource(spec, sample)
    rng = np.random.default_rng(options.seed)
    if source.months is None:
        batches = [(None, min(BATCH_ROWS, options.rows - start)) for start in range(0, options.rows, BATCH_ROWS)]
    else:
        batches = source.month_plan(options.rows)
    span = max(len(batches) - 1, 1)
    first_id = 1
    for position, (month, rows) in enumerate(batches):
        if month is None:
            stem = f"synth-batch-{position + 1:05d}"
            pool = np.arange(len(source.sample))
        else:
            year, month_number = divmod(month, 12)
            stem = f"synth-{year:04d}-{month_number + 1:02d}"
            pool = np.flatnonzero(source.months == month)
        yield stem, _chunks(source, pool, rows, month, position / span, options, rng, first_id)
        first_id += rows


def _chunks(
    source: SynthSource, pool: np.ndarray, rows: int, month: int | None, ramp: float, options: SynthOptions,
    rng: np.random.Generator, first_id: int,
) -> Iterator[pa.Table]:
    for start in range(0, rows, options.chunk_rows):
        n = min(options.chunk_rows, rows - start)
        picks = pool[rng.integers(0, len(pool), n)]
        yield source.chunk(picks, np.full(n, ramp), month, options, rng, first_id + start)


def write(
    spec: DatasetSpec, sample: pd.DataFrame, options: SynthOptions, out: Path, *, show_progress: bool = False
) -> list[Path]:
    """Write the synthetic data as Parquet files into ``out``; each appears whole (written, then renamed).

    ``show_progress`` reports rows written, rate and ETA on stderr (:class:`~price_platform.progress.RowProgress`).
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with RowProgress(options.rows, "synth", disable=not show_progress) as progress:
        for stem, chunks in generate(spec, sample, options):
            written.append(_write_file(out, stem, chunks, progress))
    return written


def _write_file(out: Path, stem: str, chunks: Iterator[pa.Table], progress: RowProgress) -> Path:
    """One output file from its chunks, written under a hidden name and renamed when complete."""
    path = out / f"{stem}.parquet"
    partial = out / f".{stem}.parquet.partial"
    writer = None
    try:
        for table in chunks:
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema, compression="zstd")
            writer.write_table(table)
            progress.update(table.num_rows)
    except BaseException:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
        raise
    assert writer is not None
    writer.close()
    os.replace(partial, path)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, required=True, help="number of records to make")
    parser.add_argument("--drift", type=float, default=0.0,
                        help="growth of sizes and prices from the first to the last month (0.2 = +20%%)")
    parser.add_argument("--noise", type=float, default=0.05, help="noise as a share of each numeric column's spread")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the landing folder)")
    parser.add_argument("--no-progress", action="store_true", help="do not report rows written, rate and ETA")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    spec = load_dataset(settings.dataset)
    options = SynthOptions(rows=args.rows, drift=args.drift, noise=args.noise, seed=args.seed)
    out = args.out or settings.landing
    files = write(spec, read_sample(spec), options, out, show_progress=not args.no_progress)
    print(f"wrote {options.rows:,} rows in {len(files)} Parquet files to {out}")
    return 0
