"""Estimated RMSLE before prices arrive (direct loss estimation): the estimator, the asset, the retrain signal."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.defs.monitoring.assets import estimated_performance
from price_platform.defs.monitoring.resources import Monitoring
from price_platform.defs.monitoring.sensors import drift_event_key, estimated_loss_event_key, retrain_on_drift
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.modeling import read_sample
from price_platform.monitoring import performance_estimation as estimation
from price_platform.postgres import PostgresServer
from price_platform.settings import DEFAULT_DATASET, Settings
from price_platform.warehouse import connect, migrate
from price_platform_tests.conftest import drop_databases

SPEC = DatasetSpec.model_validate(
    {"name": "synthetic", "target": "price", "numeric": {"size": {}}, "categorical": {"kind": {}, "owner": {}},
     "pii": ["owner"]}
)


def synthetic(rows: int, share_noisy: float, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Records whose log error is small for kind ``calm`` and large for kind ``noisy``; the champion's answers."""
    rng = np.random.default_rng(seed)
    noisy = rng.random(rows) < share_noisy
    size = rng.uniform(50, 250, rows)
    features = pd.DataFrame({"size": size, "kind": np.where(noisy, "noisy", "calm"),
                             "owner": [f"hash{n}" for n in rng.integers(0, 10**6, rows)]})
    predicted = np.exp(10 + size / 100)
    actual = predicted * np.exp(rng.normal(0, np.where(noisy, 0.4, 0.05)))
    return features, predicted, actual


def rmsle(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.log(actual) - np.log(predicted)) ** 2)))


@pytest.fixture(scope="module")
def estimator() -> estimation.LossEstimator:
    features, predicted, actual = synthetic(2000, 0.3, seed=1)
    return estimation.LossEstimator.fit(SPEC, features, predicted, actual)


def test_the_loss_model_reads_every_feature_but_the_hashed_ones():
    assert estimation.loss_inputs(SPEC) == ["size", "kind"]


def test_an_estimate_follows_a_change_of_inputs_toward_rows_the_champion_gets_wrong(estimator):
    for share in (0.05, 0.3, 0.8):
        features, predicted, actual = synthetic(3000, share, seed=2)
        found = estimator.estimate(features, predicted)
        realized = rmsle(actual, predicted)
        assert found["estimated_rmsle"] == pytest.approx(realized, rel=0.15), share
        assert found["lower"] <= found["estimated_rmsle"] <= found["upper"]
    calm = estimator.estimate(*synthetic(3000, 0.05, seed=3)[:2])["estimated_rmsle"]
    noisy = estimator.estimate(*synthetic(3000, 0.8, seed=3)[:2])["estimated_rmsle"]
    assert noisy > 2 * calm


def test_the_interval_narrows_with_more_predictions(estimator):
    few = estimator.estimate(*synthetic(40, 0.3, seed=4)[:2])
    many = estimator.estimate(*synthetic(4000, 0.3, seed=4)[:2])
    assert (many["upper"] - many["lower"]) < (few["upper"] - few["lower"]) / 5


def test_estimates_are_made_per_period_of_the_log(estimator):
    calm, calm_predicted, _ = synthetic(500, 0.05, seed=5)
    noisy, noisy_predicted, _ = synthetic(300, 0.8, seed=6)
    log = pd.concat([calm.assign(prediction=calm_predicted, period="2026-01-01"),
                     noisy.assign(prediction=noisy_predicted, period="2026-02-01")], ignore_index=True)
    table = estimation.estimate_by_period(estimator, log)
    assert table["period"].tolist() == ["2026-01-01", "2026-02-01"] and table["rows"].tolist() == [500, 300]
    assert table["estimated_rmsle"].iloc[1] > table["estimated_rmsle"].iloc[0]


def test_a_reference_with_too_few_prices_and_an_empty_batch_are_refused(estimator):
    features, predicted, actual = synthetic(100, 0.3, seed=7)
    actual[20:] = np.nan
    with pytest.raises(estimation.EstimationError, match="the reference has 20 rows with a price and a prediction"):
        estimation.LossEstimator.fit(SPEC, features, predicted, actual)
    with pytest.raises(estimation.EstimationError, match="no predictions"):
        estimator.estimate(features.iloc[:0], predicted[:0])


# --- the retrain sensor's estimated-loss signal -------------------------------------------


@pytest.fixture(scope="module")
def database(system_postgres_url, session_home):
    name = f"pp_est_{uuid.uuid4().hex[:8]}"
    settings = Settings(home=session_home, database_url=system_postgres_url, database_name=name)
    server = PostgresServer(server_url=make_url(system_postgres_url), database_name=name)
    server.ensure_databases()
    migrate(server.dsn())
    yield settings, server
    drop_databases(server)


def signal(instance: dg.DagsterInstance, asset: str, flag: str, detected: bool, champion: str = "7") -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, metadata={flag: detected, "champion_version": champion})
    )


def test_an_estimated_rmsle_rise_requests_one_retrain_and_drift_its_own(database):
    settings, _ = database
    resources = {"warehouse": Warehouse.from_settings(settings),
                 "monitoring": Monitoring(tracking_uri=None, model_name="price-model")}
    cursor, requests = None, []
    with dg.instance_for_test() as instance:
        signal(instance, "estimated_performance", "estimated_rmsle_rise_detected", False)
        quiet = retrain_on_drift(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
        assert not quiet.run_requests and "none past threshold" in quiet.skip_reason.skip_message
        cursor = quiet.cursor
        for _ in range(20):
            signal(instance, "estimated_performance", "estimated_rmsle_rise_detected", True)
            answer = retrain_on_drift(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
            requests += answer.run_requests
            cursor = answer.cursor
        assert [request.run_key for request in requests] == [estimated_loss_event_key("7", 0)]
        assert requests[0].tags["price_platform/trigger"] == "estimated_loss"
        signal(instance, "drift_report", "drift_detected", True)
        drift = retrain_on_drift(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
        assert [request.run_key for request in drift.run_requests] == [drift_event_key("7", 0)]


# --- the asset on a real database and MLflow ----------------------------------------------


def test_the_asset_estimates_each_logged_month_stores_it_and_plots_it(database, mlflow_server):
    from mlflow import MlflowClient

    from price_platform.modeling import build_ridge_baseline
    from price_platform.registry.versions import register_candidate

    settings, server = database
    spec = load_dataset(DEFAULT_DATASET)
    sample = read_sample(spec)
    keys = pd.Series([f"{y:04d}-{m:02d}-01" for y, m in zip(sample[spec.time.year_column],
                                                             sample[spec.time.month_column], strict=True)])
    train = sample[(keys <= "2007-12-01").to_numpy()]
    engine = sa.create_engine(server.url())
    sample.assign(partition_key=keys.to_numpy(), record_id=np.arange(len(sample)).astype(str))[
        ["record_id", "partition_key", *spec.features, spec.target]
    ].to_sql("features", engine, schema="price_data", index=False)
    engine.dispose()
    pipeline = build_ridge_baseline(spec).fit(train[spec.features], train[spec.target])
    model_name = f"estimation-{uuid.uuid4().hex[:6]}"
    version = register_candidate(
        mlflow_server, model_name, pipeline, train[spec.features].head(5), dsn=server.dsn(),
        interval_log_halfwidth=0.2, data_version="test",
        version_tags={"train_start": "2006-01-01", "train_end": "2007-12-01"},
    ).version
    MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server).set_registered_model_alias(
        model_name, "champion", version
    )
    later = sample[(keys >= "2009-01-01").to_numpy()].head(120)
    now = datetime.now(UTC)
    rows = [
        (str(uuid.uuid4()), now - timedelta(days=40 if index < 60 else 0), str(version),
         json.dumps({name: (None if pd.isna(record[name]) else record[name]) for name in spec.features}, default=float),
         float(prediction))
        for index, ((_, record), prediction) in enumerate(zip(later.iterrows(), pipeline.predict(later[spec.features]),
                                                              strict=True))
    ]
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        cursor.executemany("insert into monitoring.predictions (prediction_id, created_at, model_version, features,"
                           " prediction) values (%s, %s, %s, %s, %s)", rows)
    result = dg.materialize(
        [estimated_performance],
        resources={"warehouse": Warehouse.from_settings(settings), "dataset": Dataset(path=str(settings.dataset)),
                   "monitoring": Monitoring(tracking_uri=mlflow_server, model_name=model_name)},
    )
    metadata = result.asset_materializations_for_node("estimated_performance")[0].metadata
    assert metadata["champion_version"].value == str(version)
    assert metadata["reference_window"].value == "2008-01-01 .. 2008-12-01"
    assert metadata["dagster/row_count"].value == 120
    assert metadata["plot"].value.startswith("![estimated RMSLE](data:image/png;base64,")
    assert metadata["by_month"].value.count("| 20") == 2
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("select period_start, value from monitoring.model_metrics where source = 'estimated'"
                       " and metric = 'rmsle' and model_version = %s order by period_start", (str(version),))
        stored = cursor.fetchall()
    assert len(stored) == 2 and all(0.02 < value < 1.0 for _, value in stored)
    assert metadata["estimated_rmsle"].value == pytest.approx(stored[-1][1])
    assert metadata["estimated_rmsle_rise_detected"].value is (
        stored[-1][1] / metadata["reference_rmsle"].value - 1 > Monitoring().estimated_rmsle_rise_threshold
    )
