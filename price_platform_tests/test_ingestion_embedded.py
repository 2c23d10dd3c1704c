"""A load into the embedded PostgreSQL the platform starts when no server is configured."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg2
import pytest
from conftest import free_port

from price_platform.datasets import bundled_sample, load_dataset
from price_platform.defs.resources import Warehouse
from price_platform.ingestion.loading import ingest_partition
from price_platform.postgres import EmbeddedPostgres
from price_platform.settings import DEFAULT_DATASET


@pytest.fixture
def embedded() -> Iterator[EmbeddedPostgres]:
    """An embedded server of this test's own, on a free port, stopped and removed at the end.

    Its folder is not under pytest's tmp_path: a concurrently starting pytest resets that
    tree to mode 0700, which locks out the server's own (non-root) user.
    """
    folder = Path(tempfile.mkdtemp(prefix="pp-embedded-"))
    server = EmbeddedPostgres(folder / "postgres", free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_partition_loads_into_the_embedded_postgres(embedded: EmbeddedPostgres) -> None:
    warehouse = Warehouse(database_url=embedded.url, database_name="pp_embedded")
    spec = load_dataset(DEFAULT_DATASET)
    for _ in range(2):
        summary = ingest_partition(warehouse.dsn, spec, "2010-01-01")
    sample = pd.read_csv(bundled_sample())
    expected = int(((sample["Year_Sold"] == 2010) & (sample["Mo_Sold"] == 1)).sum())
    with psycopg2.connect(warehouse.dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*), count(distinct _load_id) from price_data.raw_sales")
        assert cursor.fetchone() == (expected, 1)
        cursor.execute("select count(*) from price_data.loads")
        assert cursor.fetchone() == (2,)
    connection.close()
    assert summary.rows_loaded == expected
