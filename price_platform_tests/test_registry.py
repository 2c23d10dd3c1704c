"""The model registry against a real MLflow server and PostgreSQL: register, promote, gate, race, rollback."""

from __future__ import annotations

import math
import threading
import uuid

import numpy as np
import pytest

from price_platform.datasets import load_dataset
from price_platform.modeling import build_xgboost_pipeline, read_sample
from price_platform.registry import ARCHIVED_TAG, CHALLENGER, CHAMPION, tracking
from price_platform.registry.champion import (
    NoChampionError,
    champion_version,
    load_champion,
)
from price_platform.registry.promotion import (
    PromotionRefused,
    deployments,
    promote,
    rollback,
)
from price_platform.registry.versions import InvalidMetricError, register_candidate
from price_platform.settings import Settings


@pytest.fixture(scope="module")
def fitted(settings: Settings):
    spec = load_dataset(settings.dataset)
    frame = read_sample(spec).head(600)
    pipeline = build_xgboost_pipeline(spec, {"n_estimators": 20}).fit(frame[spec.features], frame[spec.target])
    return spec, frame, pipeline


def _register(mlflow_server: str, dsn: str, model_name: str, fitted, rmsle: float) -> str:
    spec, frame, pipeline = fitted
    return register_candidate(
        mlflow_server,
        model_name,
        pipeline,
        frame[spec.features],
        dsn=dsn,
        interval_log_halfwidth=0.2,
        data_version="test-data",
        metrics={"holdout_rmsle": rmsle},
    ).version


def test_registered_version_carries_serving_tags_and_loads_as_champion(mlflow_server, postgres, fitted) -> None:
    spec, frame, pipeline = fitted
    name = f"model-{uuid.uuid4().hex[:6]}"
    with pytest.raises(NoChampionError, match="no 'champion' version"):
        load_champion(mlflow_server, name)
    version = _register(mlflow_server, postgres.dsn(), name, fitted, 0.15)
    tags = tracking.client(mlflow_server).get_model_version(name, version).tags
    assert {"interval_log_halfwidth", "data_version", "dbt_manifest_hash", "git_commit"} <= set(tags)
    assert tracking.version_by_alias(tracking.client(mlflow_server), name, CHALLENGER).version == version

    row = promote(mlflow_server, name, version, dsn=postgres.dsn(), actor="test", reason="first model")
    assert (row.action, row.from_version, row.to_version) == ("promote", None, version)
    champion = load_champion(mlflow_server, name, dsn=postgres.dsn())
    assert champion.version == version
    assert champion.interval_log_halfwidth == pytest.approx(0.2)
    assert champion.metrics["holdout_rmsle"] == pytest.approx(0.15)
    assert champion.data_version == "test-data"
    rows = frame[spec.features].tail(20)
    np.testing.assert_allclose(champion.pipeline.predict(rows), pipeline.predict(rows))
    assert tracking.version_by_alias(tracking.client(mlflow_server), name, CHALLENGER) is None


def test_worse_challenger_is_refused_and_champion_kept(mlflow_server, postgres, fitted) -> None:
    name = f"model-{uuid.uuid4().hex[:6]}"
    first = _register(mlflow_server, postgres.dsn(), name, fitted, 0.15)
    promote(mlflow_server, name, first, dsn=postgres.dsn(), actor="test")
    worse = _register(mlflow_server, postgres.dsn(), name, fitted, 0.16)
    with pytest.raises(PromotionRefused, match="does not beat champion"):
        promote(mlflow_server, name, worse, dsn=postgres.dsn(), actor="test")
    assert champion_version(mlflow_server, name) == first
    assert [(d.action, d.to_version) for d in deployments(postgres.dsn(), name)] == [
        ("promote", first),
        ("refuse", worse),
    ]
    with pytest.raises(PromotionRefused, match="already the champion"):
        promote(mlflow_server, name, first, dsn=postgres.dsn(), actor="test")


def test_margin_refuses_a_challenger_that_is_only_slightly_better(mlflow_server, postgres, fitted) -> None:
    name = f"model-{uuid.uuid4().hex[:6]}"
    first = _register(mlflow_server, postgres.dsn(), name, fitted, 0.150)
    promote(mlflow_server, name, first, dsn=postgres.dsn(), actor="test")
    slightly = _register(mlflow_server, postgres.dsn(), name, fitted, 0.149)
    with pytest.raises(PromotionRefused):
        promote(mlflow_server, name, slightly, dsn=postgres.dsn(), actor="test", margin=0.05)
    assert champion_version(mlflow_server, name) == first


def test_promotion_archives_the_old_champion_and_rollback_restores_it(mlflow_server, postgres, fitted) -> None:
    name = f"model-{uuid.uuid4().hex[:6]}"
    client = tracking.client(mlflow_server)
    first = _register(mlflow_server, postgres.dsn(), name, fitted, 0.15)
    with pytest.raises(PromotionRefused, match="no champion to roll back"):
        rollback(mlflow_server, name, dsn=postgres.dsn(), actor="test")
    promote(mlflow_server, name, first, dsn=postgres.dsn(), actor="test")
    with pytest.raises(PromotionRefused, match="nothing to roll back to"):
        rollback(mlflow_server, name, dsn=postgres.dsn(), actor="test")
    second = _register(mlflow_server, postgres.dsn(), name, fitted, 0.14)
    promote(mlflow_server, name, second, dsn=postgres.dsn(), actor="test")
    assert client.get_model_version(name, first).tags[ARCHIVED_TAG] == "true"
    assert client.get_model_version(name, second).tags[ARCHIVED_TAG] == "false"

    row = rollback(mlflow_server, name, dsn=postgres.dsn(), actor="test", reason="bad answers")
    assert (row.action, row.from_version, row.to_version) == ("rollback", second, first)
    assert champion_version(mlflow_server, name) == first
    assert client.get_model_version(name, second).tags[ARCHIVED_TAG] == "true"
    assert client.get_model_version(name, first).tags[ARCHIVED_TAG] == "false"


def test_two_racing_promotions_end_with_one_consistent_champion(mlflow_server, postgres, fitted) -> None:
    name = f"model-{uuid.uuid4().hex[:6]}"
    client = tracking.client(mlflow_server)
    first = _register(mlflow_server, postgres.dsn(), name, fitted, 0.15)
    promote(mlflow_server, name, first, dsn=postgres.dsn(), actor="test")
    racers = [_register(mlflow_server, postgres.dsn(), name, fitted, rmsle) for rmsle in (0.14, 0.13)]
    start = threading.Barrier(len(racers))
    outcomes: dict[str, str] = {}

    def race(version: str) -> None:
        start.wait()
        try:
            promote(mlflow_server, name, version, dsn=postgres.dsn(), actor=f"racer-{version}")
            outcomes[version] = "promoted"
        except PromotionRefused:
            outcomes[version] = "refused"

    threads = [threading.Thread(target=race, args=(v,)) for v in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    champion = champion_version(mlflow_server, name)
    versions = client.search_model_versions(f"name = '{name}'")
    holders = [v.version for v in versions if CHAMPION in client.get_model_version(name, v.version).aliases]
    assert holders == [champion]
    # The best racer wins whatever the order; the deployment rows form one unbroken chain.
    assert champion == racers[1]
    promotions = [d for d in deployments(postgres.dsn(), name) if d.action == "promote"]
    assert [d.from_version for d in promotions[1:]] == [d.to_version for d in promotions[:-1]]
    assert promotions[-1].to_version == champion
    for version in {d.to_version for d in promotions} - {champion}:
        assert client.get_model_version(name, version).tags[ARCHIVED_TAG] == "true"


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_metric_registers_nothing(mlflow_server, postgres, fitted, bad: float) -> None:
    spec, frame, pipeline = fitted
    name = f"model-{uuid.uuid4().hex[:6]}"
    first = _register(mlflow_server, postgres.dsn(), name, fitted, 0.15)
    with pytest.raises(InvalidMetricError, match="holdout_rmsle="):
        register_candidate(
            mlflow_server, name, pipeline, frame[spec.features], dsn=postgres.dsn(),
            interval_log_halfwidth=0.2, data_version="x", metrics={"holdout_rmsle": bad},
        )
    versions = tracking.client(mlflow_server).search_model_versions(f"name = '{name}'")
    assert [v.version for v in versions] == [first]
    assert tracking.version_by_alias(tracking.client(mlflow_server), name, CHALLENGER).version == first


def test_unknown_version_cannot_be_promoted(mlflow_server, postgres, fitted) -> None:
    name = f"model-{uuid.uuid4().hex[:6]}"
    _register(mlflow_server, postgres.dsn(), name, fitted, 0.15)
    with pytest.raises(Exception, match="not found|RESOURCE_DOES_NOT_EXIST|does not exist"):
        promote(mlflow_server, name, "99", dsn=postgres.dsn(), actor="test")
    assert deployments(postgres.dsn(), name) == []
