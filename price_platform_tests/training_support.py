"""Helpers of the training tests: a platform database holding a ``price_data.features`` table of the sample."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from price_platform.datasets import DatasetSpec
from price_platform.modeling import DerivedFeatures, read_sample


def sample_features(spec: DatasetSpec) -> pd.DataFrame:
    """The bundled sample shaped like the dbt ``features`` mart (key columns, inputs, derived, target)."""
    frame = read_sample(spec)
    derived = DerivedFeatures(dict(spec.derived)).fit(frame[spec.features]).transform(frame[spec.features])
    months = pd.to_datetime({"year": frame["year_sold"], "month": frame["mo_sold"], "day": 1})
    return pd.DataFrame(
        {
            "record_id": frame[spec.id_column].astype(str),
            "partition_key": months.dt.strftime("%Y-%m-%d"),
            "sale_month": months.dt.date,
            "arrival_seq": range(len(frame)),
            **{column: derived[column] for column in [*spec.features, *spec.derived]},
            spec.target: frame[spec.target].astype(float),
        }
    )


def write_features(engine: sa.Engine, frame: pd.DataFrame) -> None:
    """Replace ``price_data.features`` with ``frame``."""
    with engine.begin() as connection:
        connection.execute(sa.text("drop table if exists price_data.features cascade"))
    frame.to_sql("features", engine, schema="price_data", index=False, method="multi", chunksize=500)
