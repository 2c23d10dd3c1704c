"""The training data: ``price_data.features`` split into train, validation and holdout windows.

With a time column the split is by sale month (the last ``holdout_months`` are the holdout,
the ``validation_months`` before them the validation window), never random. Without one,
rows are split at random with the settings' seed. The data version is a hash of the rows
used and of the dbt manifest that built them. Models are fitted on the windows' rows without
the area outliers (:data:`MAX_FIT_AREA`); every window is still measured on all its rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from psycopg2 import sql

from price_platform.datasets import DatasetSpec

#: Columns of ``price_data.features`` besides the model's inputs and the target.
KEY_COLUMNS = ("record_id", "partition_key", "sale_month", "arrival_seq")

#: Sales whose area column exceeds this are left out of the rows a model is *fitted* on: in
#: Ames (De Cock 2011, who recommends the cut) they are three partial sales of unfinished
#: very large houses at far too low prices and two genuine mansions; they teach the models
#: a false area-price slope. Evaluation windows keep them.
MAX_FIT_AREA = 4000.0


def without_area_outliers(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """``frame`` without the rows whose area column exceeds :data:`MAX_FIT_AREA` (unchanged if no area column)."""
    if not spec.area_column or spec.area_column not in frame:
        return frame
    return frame[~(frame[spec.area_column] > MAX_FIT_AREA)].reset_index(drop=True)


class TrainingDataError(ValueError):
    """Features that cannot be split into non-empty windows, with the reason."""


@dataclass(frozen=True)
class TrainingSplit:
    """Train, validation and holdout rows (each with key columns, features and target)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    data_version: str

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
    """Split ``frame`` into windows by sale month, or at random when the data set has no time."""
    if frame.empty:
        raise TrainingDataError("price_data.features has no rows: ingest and build features first")
    bad = frame[spec.target].isna() | ~(frame[spec.target] > spec.target_min)
    if bad.any():
        raise TrainingDataError(f"{int(bad.sum())} rows have a missing or non-positive {spec.target}")
    if spec.has_time:
        months = pd.to_datetime(frame["sale_month"]).dt.to_period("M")
        last = months.max()
        holdout_start = last - (holdout_months - 1)
        validation_start = holdout_start - validation_months
        windows = np.select([months >= holdout_start, months >= validation_start], ["holdout", "validation"], "train")
    else:
        shares = np.random.default_rng(seed).random(len(frame))
        windows = np.select([shares < 0.2, shares < 0.35], ["holdout", "validation"], "train")
    parts = {name: frame[windows == name].reset_index(drop=True) for name in ("train", "validation", "holdout")}
    empty = [name for name, part in parts.items() if part.empty]
    if empty:
        raise TrainingDataError(
            f"window(s) {', '.join(empty)} would be empty: {len(frame)} rows cannot hold "
            f"{holdout_months} holdout and {validation_months} validation months plus training months"
        )
    return TrainingSplit(**parts, data_version=data_version(frame, spec, dbt_manifest_hash))
