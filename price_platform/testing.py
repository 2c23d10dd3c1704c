"""Support shared by the test suite and the benchmarks: free ports, the machine's PostgreSQL, feature tables.

Nothing in the platform itself imports this module; ``price_platform_tests`` and ``benchmarks`` do, so that
neither imports the other.
"""

from __future__ import annotations

import os
import socket

import pandas as pd
import psycopg2
import sqlalchemy as sa

from price_platform.datasets import DatasetSpec
from price_platform.modeling import DerivedFeatures, read_sample
from price_platform.postgres import DATABASES, PostgresServer

#: The machine's PostgreSQL server the tests and benchmarks make their throwaway databases on.
SYSTEM_POSTGRES = os.environ.get("PRICE_PLATFORM_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drop_databases(server: PostgresServer) -> None:
    """Drop the platform's databases (and their MLflow and Dagster siblings) from ``server``."""
    admin = server.server_url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg2.connect(admin)
    connection.autocommit = True
    with connection.cursor() as cursor:
        for suffix in DATABASES.values():
            cursor.execute(f'drop database if exists "{server.database_name}{suffix}" with (force)')
    connection.close()


def sample_features(spec: DatasetSpec) -> pd.DataFrame:
    """The bundled sample shaped like the dbt ``features`` mart (key columns, inputs, derived, target)."""
    frame = read_sample(spec)
    derived = DerivedFeatures(dict(spec.derived)).fit(frame[spec.features]).transform(frame[spec.features])
    time = spec.time
    assert time is not None, "the bundled sample has a time"
    if time.column:
        months = pd.to_datetime(frame[time.column]).dt.to_period("M").dt.to_timestamp()
    else:
        month = frame[time.month_column] if time.month_column else 1
        months = pd.to_datetime({"year": frame[time.year_column], "month": month, "day": 1})
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
