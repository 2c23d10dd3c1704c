"""Training past one pandas frame: chunked QuantileDMatrix and xgboost.dask on a two-worker LocalCluster.

The features are the real ones: synthetic sales bulk-loaded into ``raw_sales`` and built by
the dbt project into ``price_data.features`` on a throwaway database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import psycopg2
import pytest
import xgboost as xgb
from conftest import drop_databases
from sqlalchemy.engine import make_url

from price_platform.bulk_load import bulk_load
from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.modeling import read_sample
from price_platform.postgres import PostgresServer
from price_platform.settings import DEFAULT_DATASET, Settings
from price_platform.synth import SynthOptions, write
from price_platform.training.distributed import (
    DEFAULT_PARAMS,
    EncodedReader,
    FeatureEncoder,
    feature_categories,
    feature_partitions,
    read_partition,
    rmsle,
    train_in_chunks,
    train_large,
    use_dask,
)
from price_platform.warehouse import migrate

ROUNDS = 30
PARAMS = {**DEFAULT_PARAMS, "nthread": 1}


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_dataset(DEFAULT_DATASET)


@pytest.fixture(scope="module")
def features(system_postgres_url: str, spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A throwaway platform whose ``price_data.features`` dbt built from 4,000 synthetic sales."""
    from price_platform.defs.features.project import build_vars, dbt_executable, dbt_project
    from price_platform.defs.features.resources import PlatformDbt
    from price_platform.defs.resources import Warehouse

    server = PostgresServer(server_url=make_url(system_postgres_url), database_name=f"pp_scale_{uuid.uuid4().hex[:8]}")
    server.ensure_databases()
    migrate(server.dsn())
    files = write(spec, read_sample(spec), SynthOptions(rows=4000, seed=11), tmp_path_factory.mktemp("landing"))
    bulk_load(server.dsn(), spec, files, show_progress=False)
    warehouse = Warehouse(database_url=system_postgres_url, database_name=server.database_name)
    dbt = PlatformDbt(project_dir=dbt_project(), dbt_executable=dbt_executable(), warehouse=warehouse)
    dbt.cli(["run", "--vars", json.dumps(build_vars(spec, None, None))]).wait()
    yield server
    drop_databases(server)


@pytest.fixture(scope="module")
def split(features: PostgresServer) -> tuple[list[str], list[str]]:
    """Training partitions and the last six months as holdout."""
    keys = [key for key, _ in feature_partitions(features.dsn())]
    return keys[:-6], keys[-6:]


def in_memory(dsn: str, spec: DatasetSpec, keys: list[str], encoder: FeatureEncoder) -> tuple[np.ndarray, np.ndarray]:
    tables = [read_partition(dsn, spec, key) for key in keys]
    return np.vstack([encoder.matrix(t) for t in tables]), np.concatenate([encoder.label(t) for t in tables])


def test_the_encoder_matches_the_model_pipelines_encoding(features, spec, split):
    """The chunked path feeds XGBoost exactly what the registered pipeline's encode step computes."""
    from price_platform.training.distributed import as_pipeline

    dsn = features.dsn()
    categories = feature_categories(dsn, spec)
    encoder = FeatureEncoder(spec, categories)
    table = read_partition(dsn, spec, split[0][0])
    frame = table.to_pandas()
    frame.loc[0, "neighborhood"] = "Atlantis"  # unknown category -> -1, as the pipeline's OrdinalEncoder
    frame.loc[1, "mas_vnr_type"] = None  # missing -> -1
    booster = xgb.train(PARAMS, xgb.DMatrix(encoder.matrix(table), encoder.label(table)), num_boost_round=3)
    pipeline = as_pipeline(booster, spec, categories, frame)
    steps = pipeline[:-1].transform(frame[spec.features])
    import pyarrow as pa

    mine = encoder.matrix(pa.Table.from_pandas(frame, preserve_index=False))
    assert np.allclose(np.asarray(steps, dtype=np.float32), mine, equal_nan=True)
    assert mine[0, encoder.columns.index("neighborhood")] == -1 and mine[1, encoder.columns.index("mas_vnr_type")] == -1
    assert np.allclose(pipeline.predict(frame[spec.features]), np.exp(booster.inplace_predict(mine)), rtol=1e-5)


def test_the_binary_read_encodes_exactly_as_the_csv_read(features, spec, split):
    """What training reads (binary COPY, categories as hashes) equals the CSV read through the encoder, value for value."""
    dsn = features.dsn()
    categories = feature_categories(dsn, spec)
    categories["neighborhood"] = categories["neighborhood"][1:]  # a category the encoder does not know -> -1
    encoder = FeatureEncoder(spec, categories)
    rows = dict(feature_partitions(dsn))
    for key in split[0][:3]:
        table = read_partition(dsn, spec, key, dictionary=True)
        # rows unknown (growing buffer), known (exact buffer), and undercounted (the exact buffer grows)
        for counts in ({}, rows, {key: rows[key] - 5}):
            data, label = EncodedReader(dsn, encoder, counts)(key)
            assert np.array_equal(data, encoder.matrix(table), equal_nan=True)
            assert np.array_equal(label, encoder.label(table))
    column = data[:, encoder.columns.index("mas_vnr_type")]
    assert (column == -1).any() and (column >= 0).any()  # missing values read as -1 beside known ones


def test_chunked_training_equals_training_on_the_whole_matrix(features, spec, split):
    dsn = features.dsn()
    encoder = FeatureEncoder(spec, feature_categories(dsn, spec))
    chunked = train_in_chunks(dsn, spec, split[0], encoder, params=PARAMS, rounds=ROUNDS)
    matrix, label = in_memory(dsn, spec, split[0], encoder)
    whole = xgb.train(PARAMS, xgb.QuantileDMatrix(matrix, label, max_bin=256), num_boost_round=ROUNDS)
    holdout, _ = in_memory(dsn, spec, split[1], encoder)
    assert np.allclose(chunked.inplace_predict(holdout), whole.inplace_predict(holdout), atol=0.02)


def test_dask_training_on_two_workers_agrees_in_quality_with_one_process(features, spec, split):
    from distributed import Client, LocalCluster

    dsn = features.dsn()
    settings = Settings(threads=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        on_dask = train_large(settings, dsn, spec, split[0], params=PARAMS, rounds=ROUNDS, client=client)
        assert len(client.scheduler_info()["workers"]) == 2
    single = train_large(settings, dsn, spec, split[0], params=PARAMS, rounds=ROUNDS)
    assert (on_dask.engine, single.engine) == ("dask", "chunked")
    assert on_dask.rows == single.rows == sum(rows for key, rows in feature_partitions(dsn) if key in split[0])
    encoder = FeatureEncoder(spec, feature_categories(dsn, spec))
    dask_error = rmsle(on_dask.booster, dsn, spec, split[1], encoder)
    single_error = rmsle(single.booster, dsn, spec, split[1], encoder)
    baseline = rmsle_of_mean(dsn, spec, split, encoder)
    assert dask_error < 0.6 * baseline and single_error < 0.6 * baseline  # both learned something real
    assert abs(dask_error - single_error) / single_error < 0.1
    frame = read_partition(dsn, spec, split[1][0]).to_pandas()
    predictions = on_dask.pipeline.predict(frame[spec.features])
    assert np.all(np.isfinite(predictions)) and np.all(predictions > 0)


def rmsle_of_mean(dsn: str, spec: DatasetSpec, split, encoder: FeatureEncoder) -> float:  # noqa: ANN001
    _, train_label = in_memory(dsn, spec, split[0], encoder)
    _, holdout_label = in_memory(dsn, spec, split[1], encoder)
    return float(np.sqrt(np.mean((holdout_label - train_label.mean()) ** 2)))


def test_dask_is_chosen_by_scheduler_or_size():
    assert not use_dask(Settings(dask_min_rows=1_000_000), 999_999)
    assert use_dask(Settings(dask_min_rows=1_000_000), 1_000_000)
    assert use_dask(Settings(dask_scheduler="tcp://scheduler:8786"), 10)


def test_training_refuses_partitions_without_features(features, spec):
    with pytest.raises(ValueError, match=r"no features for partitions \['1999-01-01'\]"):
        train_large(Settings(), features.dsn(), spec, ["1999-01-01"], rounds=1)


def test_the_settings_scheduler_is_used_when_named(features, spec, split):
    """``PRICE_PLATFORM_DASK_SCHEDULER`` makes training connect to that scheduler."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        settings = Settings(dask_scheduler=cluster.scheduler_address, threads=1)
        result = train_large(settings, features.dsn(), spec, split[0][:3], params=PARAMS, rounds=5)
    assert result.engine == "dask"
    with pytest.raises(OSError):
        train_large(Settings(dask_scheduler="tcp://127.0.0.1:1", threads=1), features.dsn(), spec, split[0][:1], rounds=1)


def test_read_partition_keeps_nulls_and_empty_strings_apart(features, spec, split):
    dsn = features.dsn()
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*) from price_data.features where partition_key = %s and misc_feature is null", (split[0][0],))
        nulls = cursor.fetchone()[0]
    connection.close()
    table = read_partition(dsn, spec, split[0][0])
    assert table["misc_feature"].null_count == nulls > 0
    assert pd.Series(table["neighborhood"].to_pylist()).notna().all()


def test_training_runs_on_dask_worker_processes_named_by_the_scheduler_setting(features, spec, split, tmp_path):
    """A real ``dask scheduler`` and two ``dask worker`` processes (not a cluster in this process), found by address."""
    import os

    from distributed import Client

    from price_platform.training.dask_processes import dask_processes, on_workers

    dsn = features.dsn()
    with dask_processes(tmp_path / "dask", workers=2, threads=1) as address:
        with Client(address) as client:
            worker_pids = set(client.run(os.getpid).values())
        assert len(worker_pids) == 2 and os.getpid() not in worker_pids
        trained = train_large(Settings(dask_scheduler=address, threads=1), dsn, spec, split[0], params=PARAMS, rounds=ROUNDS)
        assert on_workers(address, os.getpid) in worker_pids  # a submitted task (the bench's drift) runs in a worker
    assert trained.engine == "dask"
    assert trained.rows == sum(rows for key, rows in feature_partitions(dsn) if key in split[0])
    encoder = FeatureEncoder(spec, feature_categories(dsn, spec))
    assert rmsle(trained.booster, dsn, spec, split[1], encoder) < 0.6 * rmsle_of_mean(dsn, spec, split, encoder)
