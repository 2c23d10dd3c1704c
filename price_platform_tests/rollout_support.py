"""Shared pieces of the rollout tests: a small fitted pipeline, a model with champion and challenger
in a database of its own, and logged requests with prices."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.engine import make_url

from price_platform.datasets import load_dataset
from price_platform.modeling import build_xgboost_pipeline, read_sample
from price_platform.postgres import PostgresServer
from price_platform.registry.promotion import promote
from price_platform.registry.versions import register_candidate
from price_platform.settings import Settings
from price_platform.warehouse import connect, migrate
from price_platform_tests.conftest import drop_databases


@pytest.fixture(scope="module")
def fitted(settings: Settings):
    spec = load_dataset(settings.dataset)
    frame = read_sample(spec).head(400)
    pipeline = build_xgboost_pipeline(spec, {"n_estimators": 10}).fit(frame[spec.features], frame[spec.target])
    return spec, frame, pipeline


def register(mlflow_server: str, name: str, fitted, dsn: str) -> str:
    spec, frame, pipeline = fitted
    return register_candidate(
        mlflow_server, name, pipeline, frame[spec.features], dsn=dsn, interval_log_halfwidth=0.2,
        data_version="test", metrics={"holdout_rmsle": 0.15},
    ).version


@pytest.fixture
def database(system_postgres_url: str) -> Iterator[PostgresServer]:
    """A migrated throwaway platform database of its own (versions are numbered per model, and the
    prediction log has no model name: every test's versions 1 and 2 would pair with each other's)."""
    server = PostgresServer(server_url=make_url(system_postgres_url), database_name=f"pp_rollout_{uuid.uuid4().hex[:8]}")
    server.ensure_databases()
    migrate(server.dsn())
    yield server
    drop_databases(server)


@pytest.fixture
def rollout(mlflow_server: str, database: PostgresServer, fitted) -> tuple[str, str, str]:
    """A fresh model with a champion and a registered challenger: (name, champion, challenger)."""
    name = f"rollout-{uuid.uuid4().hex[:6]}"
    champion = register(mlflow_server, name, fitted, database.dsn())
    promote(mlflow_server, name, champion, dsn=database.dsn(), actor="test")
    challenger = register(mlflow_server, name, fitted, database.dsn())
    return name, champion, challenger


def feed(dsn: str, champion: str, challenger: str, scale: float, count: int, seed: int) -> None:
    """``count`` requests answered by the champion and shadowed by the challenger, with their prices."""
    rng = np.random.default_rng(seed)
    actual = rng.uniform(100_000, 300_000, count)
    champion_error = 0.13 * rng.standard_normal(count)
    challenger_error = (0.8 * champion_error + 0.6 * 0.13 * rng.standard_normal(count)) * scale
    start = datetime(2026, 1, 5, tzinfo=UTC)
    with connect(dsn) as connection, connection.cursor() as cursor:
        for index in range(count):
            prediction_id = uuid.uuid4()
            at = start + timedelta(seconds=index)
            cursor.execute(
                "insert into monitoring.predictions (prediction_id, created_at, model_version, features, prediction)"
                " values (%s, %s, %s, %s, %s)",
                (str(prediction_id), at, champion, json.dumps({}), float(actual[index] * np.exp(champion_error[index]))),
            )
            cursor.execute(
                "insert into monitoring.rollout_predictions (prediction_id, model_version, role, prediction)"
                " values (%s, %s, 'shadow', %s)",
                (str(prediction_id), challenger, float(actual[index] * np.exp(challenger_error[index]))),
            )
            cursor.execute(
                "insert into monitoring.actuals (prediction_id, actual, received_at) values (%s, %s, %s)",
                (str(prediction_id), float(actual[index]), at + timedelta(hours=1)),
            )


def log_requests(dsn: str, frame, spec, version: str, answered, at: datetime) -> None:
    """Log ``frame``'s rows as requests ``version`` answered with ``answered`` at ``at``, their prices sent back."""
    features = frame[spec.features].astype(object).where(frame[spec.features].notna(), None)
    with connect(dsn) as connection, connection.cursor() as cursor:
        for index, (record, price, actual) in enumerate(
            zip(features.to_dict("records"), answered, frame[spec.target], strict=True)
        ):
            prediction_id = str(uuid.uuid4())
            cursor.execute(
                "insert into monitoring.predictions (prediction_id, created_at, model_version, features, prediction)"
                " values (%s, %s, %s, %s, %s)",
                (prediction_id, at + timedelta(seconds=index), version, json.dumps(record, default=float), float(price)),
            )
            cursor.execute(
                "insert into monitoring.actuals (prediction_id, actual) values (%s, %s)", (prediction_id, float(actual))
            )
