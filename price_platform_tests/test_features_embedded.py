"""The dbt features on the embedded PostgreSQL: the same project, connected through the warehouse resource."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port

from price_platform.datasets import load_dataset
from price_platform.defs.features.project import build_vars, dbt_executable, dbt_project
from price_platform.defs.features.resources import PlatformDbt
from price_platform.defs.resources import Warehouse
from price_platform.ingestion.loading import ingest_partition
from price_platform.postgres import EmbeddedPostgres
from price_platform.settings import DEFAULT_DATASET


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """An embedded server of this test's own, on a free port, stopped at the end."""
    server = EmbeddedPostgres(tmp_path / "postgres", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_month_of_features_builds_on_the_embedded_postgres(embedded: EmbeddedPostgres) -> None:
    spec = load_dataset(DEFAULT_DATASET)
    warehouse = Warehouse(database_url=embedded.url, database_name="pp_embedded_features")
    for month in ("2010-01-01", "2010-02-01"):
        ingest_partition(warehouse.dsn, spec, month)
    dbt = PlatformDbt(project_dir=dbt_project(), dbt_executable=dbt_executable(), warehouse=warehouse)
    assert dbt.connection_environment()["DBT_PG_PORT"] == str(embedded.port)
    dbt_vars = json.dumps(build_vars(spec, "2010-02-01", "2010-02-01"))
    invocation = dbt.cli(["build", "--vars", dbt_vars], raise_on_error=False).wait()
    assert invocation.is_successful(), invocation.get_error()
    with warehouse.engine.connect() as connection:
        features = pd.read_sql_query("select * from price_data.features", connection)
        raw = pd.read_sql_query("select _partition_key, neighborhood from price_data.raw_sales", connection)
    warehouse.engine.dispose()
    assert set(features.partition_key) == {"2010-02-01"}
    assert len(features) == (raw._partition_key == "2010-02-01").sum()
    january = raw[raw._partition_key == "2010-01-01"].neighborhood.value_counts()
    expected = features.neighborhood.map(january).fillna(0)
    assert (features.prior_sales_by_neighborhood == expected).all() and expected.sum() > 0
