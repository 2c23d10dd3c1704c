"""The training data: ``price_data.features`` split into train, validation and holdout windows.

With a monthly time the split is by sale month (the last ``holdout_months`` are the holdout,
the ``validation_months`` before them the validation window), never random. With a year-only
time it is by year when there are at least three years (the last year is the holdout, the one
before it the validation window), else random within each year, so that every year is in
every window. Without a time, rows are split at random with the settings' seed. The method
used is the split's :attr:`TrainingSplit.split_method`. The data version is a hash of the rows
used and of the dbt manifest that built them. Models are fitted on the windows' rows without
the data set's outlier rules' rows (:func:`without_area_outliers`); every window is still
measured on all its rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from psycopg2 import sql

from price_platform.datasets import DatasetSpec

#: Columns of ``price_data.features`` besides the model's inputs and the target.
KEY_COLUMNS = ("record_id", "partition_key", "sale_month", "arrival_seq")

#: How a split was made: by month, by year, at random within each year, or at random.
SplitMethod = Literal["by_month", "by_year", "random_within_years", "random"]

#: Shares of the rows in the holdout and validation windows of a random split.
HOLDOUT_SHARE, VALIDATION_SHARE = 0.2, 0.15


#: A numeric feature whose rank correlation with the target reaches this is a leak (its log, a multiple).
LEAK_CORRELATION = 0.995


def leaking_columns(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """Numeric features that are a near-exact monotone function of the target (such as its log)."""
    target = frame[spec.target].rank()
    found = []
    for column in spec.numeric:
        values = frame[column]
        if column in frame and values.notna().sum() > 2 and values.nunique() > 2:
            if abs(values.rank().corr(target)) >= LEAK_CORRELATION:
                found.append(column)
    return found


def without_area_outliers(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """``frame`` without the rows the data set's outlier rules leave out of fitting (missing values stay).

    Each rule (``outliers`` in the YAML) drops the rows whose column is above its ``above``
    or below its ``below``; with no rules the frame is returned unchanged.
    """
    dropped = pd.Series(False, index=frame.index)
    for rule in spec.outliers:
        if rule.column not in frame:
            continue
        if rule.above is not None:
            dropped |= frame[rule.column] > rule.above
        if rule.below is not None:
            dropped |= frame[rule.column] < rule.below
    return frame[~dropped].reset_index(drop=True) if dropped.any() else frame


class TrainingDataError(ValueError):
    """Features that cannot be split into non-empty windows, with the reason."""


@dataclass(frozen=True)
class TrainingSplit:
    """Train, validation and holdout rows (each with key columns, features and target)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    data_version: str
    split_method: SplitMethod

    @property
    def fit_rows(self) -> pd.DataFrame:
        """Train and validation together: what the final model is fitted on."""
        return pd.concat([self.train, self.validation], ignore_index=True)

    def window(self, name: str) -> tuple[str | None, str | None]:
        """First and last partition key of a window (``train``, ``validation``, ``holdout``, ``fit``)."""
        frame = self.fit_rows if name == "fit" else getattr(self, name)
        keys = frame["partition_key"].dropna()
        return (str(keys.min()), str(keys.max())) if len(keys) else (None, None)

    def summary(self) -> pd.DataFrame:
        """Rows and months of each window, for metadata."""
        rows = []
        for name in ("train", "validation", "holdout"):
            frame = getattr(self, name)
            first, last = self.window(name)
            rows.append({"window": name, "rows": len(frame), "first": first, "last": last})
        return pd.DataFrame(rows)


def read_features(engine: sa.Engine, spec: DatasetSpec) -> pd.DataFrame:
    """Every row of ``price_data.features`` with the key columns, the model's inputs and the target."""
    columns = [*KEY_COLUMNS, *spec.features, spec.target]
    query = sql.SQL("select {} from price_data.features order by arrival_seq, record_id").format(
        sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with engine.connect() as connection:
        frame = pd.read_sql_query(query.as_string(connection.connection.dbapi_connection), connection)
    for column in spec.categorical:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def manifest_hash(path: Path | None) -> str:
    """SHA-256 of dbt's ``manifest.json`` (``none`` when dbt has not written one)."""
    if path is None or not path.exists():
        return "none"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_version(frame: pd.DataFrame, spec: DatasetSpec, dbt_manifest_hash: str) -> str:
    """Hash of the rows (ids, inputs and target, in record order) and of the dbt manifest."""
    ordered = frame.sort_values("record_id")[["record_id", *spec.features, spec.target]]
    rows = pd.util.hash_pandas_object(ordered, index=False).to_numpy()
    digest = hashlib.sha256(rows.tobytes())
    digest.update(dbt_manifest_hash.encode())
    return digest.hexdigest()[:16]


def split(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    *,
    holdout_months: int,
    validation_months: int,
    seed: int,
    dbt_manifest_hash: str = "none",
) -> TrainingSplit:
    """Split ``frame`` into windows by sale month or year, or at random (see the module's docstring)."""
    if frame.empty:
        raise TrainingDataError("price_data.features has no rows: ingest and build features first")
    bad = frame[spec.target].isna() | ~(frame[spec.target] > spec.target_min)
    if bad.any():
        raise TrainingDataError(f"{int(bad.sum())} rows have a missing or non-positive {spec.target}")
    leaks = leaking_columns(frame, spec)
    if leaks:
        raise TrainingDataError(
            f"columns {leaks} are a near-exact function of the target {spec.target} (rank correlation >="
            f" {LEAK_CORRELATION}): a leak; leave them out of the data set description"
        )
    method, windows = _windows(frame, spec, holdout_months, validation_months, seed)
    parts = {name: frame[windows == name].reset_index(drop=True) for name in ("train", "validation", "holdout")}
    empty = [name for name, part in parts.items() if part.empty]
    if empty:
        needs = {
            "by_month": f"{holdout_months} holdout and {validation_months} validation months plus training months",
            "by_year": "a holdout year and a validation year plus training years",
        }.get(method, "rows in each of the three windows")
        raise TrainingDataError(
            f"window(s) {', '.join(empty)} would be empty ({method} split): {len(frame)} rows cannot hold {needs}"
        )
    return TrainingSplit(**parts, data_version=data_version(frame, spec, dbt_manifest_hash), split_method=method)


def _windows(
    frame: pd.DataFrame, spec: DatasetSpec, holdout_months: int, validation_months: int, seed: int
) -> tuple[SplitMethod, np.ndarray]:
    """The split method and each row's window name."""
    if spec.time is None:
        shares = np.random.default_rng(seed).random(len(frame))
        return "random", _by_share(shares)
    months = pd.to_datetime(frame["sale_month"]).dt.to_period("M")
    if spec.time.granularity == "month":
        last = months.max()
        holdout_start = last - (holdout_months - 1)
        validation_start = holdout_start - validation_months
        return "by_month", np.select(
            [months >= holdout_start, months >= validation_start], ["holdout", "validation"], "train"
        )
    years = months.dt.year
    if years.nunique() >= 3:
        last = years.max()
        return "by_year", np.select([years == last, years == last - 1], ["holdout", "validation"], "train")
    # Too few years to hold out whole ones: each year's rows are split at random in the same shares.
    rng = np.random.default_rng(seed)
    shares = np.empty(len(frame))
    for positions in pd.Series(range(len(frame))).groupby(years.to_numpy()).indices.values():
        shares[positions] = (rng.permutation(len(positions)) + 0.5) / len(positions)
    return "random_within_years", _by_share(shares)


def _by_share(shares: np.ndarray) -> np.ndarray:
    return np.select(
        [shares < HOLDOUT_SHARE, shares < HOLDOUT_SHARE + VALIDATION_SHARE], ["holdout", "validation"], "train"
    )
