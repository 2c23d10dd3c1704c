"""Shadow and canary in the served API: a failing or slow shadow never touches the champion's answers, the
canary answers its share and falls back to the champion when its version leaves the registry.

The server tests run ``price-platform serve`` as a child process on a model name of their own
(the shared champion's files registered again, plus the versions each test makes); the scorer
and routing tests run in this process.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from test_serving_support import Champion, Server, champion, records, run_load, server_env  # noqa: F401 (fixture)

from price_platform.modeling import build_xgboost_pipeline
from price_platform.registry import tracking
from price_platform.registry.versions import register_candidate
from price_platform.rollout import CANARY_SHARE_TAG, SHADOW
from price_platform.warehouse import connect
from serving import metrics
from serving.model_store import LoadedModel
from serving.prediction_log import LoggedPredictions, PredictionLog
from serving.rollout import NO_ROLLOUT, OffPathScorer, Rollout, bucket
from serving.schemas import build_schemas


@pytest.fixture
def model(champion: Champion) -> Champion:
    """A model of this test's own whose champion is the shared champion's pipeline."""
    settings = champion.settings.model_copy(update={"model_name": f"rollout-serving-{uuid.uuid4().hex[:6]}"})
    found = Champion(settings, champion.spec, champion.pipeline, champion.train, champion.holdout,
                     champion.tracking_uri, champion.dsn)
    version = found.register()
    found.promote(version)
    return dataclasses.replace(found, version=version)


def unseen_category(found: Champion) -> tuple[str, Any]:
    """A categorical column and a value of it that the holdout has: a shadow trained without it fails on it."""
    for column in found.spec.categorical:
        counts = found.holdout[column].dropna().value_counts()
        if len(counts) and found.train[column].notna().all():
            return column, counts.index[0]
    raise AssertionError("no categorical column without nulls to make a failing shadow with")


def register_pipeline(found: Champion, pipeline: Any, frame: Any) -> str:
    return register_candidate(
        found.tracking_uri, found.settings.model_name, pipeline, frame[found.spec.features], dsn=found.dsn,
        interval_log_halfwidth=0.2, data_version="serving-rollout-test", metrics={"holdout_rmsle": 0.1},
    ).version


def raising_shadow(found: Champion) -> tuple[str, str, Any]:
    """A version whose pipeline raises on one category value it never saw (its encoder does not ignore unknowns).

    An identity step between encoder and model keeps the fast path from compiling it, so the
    pipeline itself (which raises) serves it. Returns (version, column, value).
    """
    column, value = unseen_category(found)
    spec = found.spec
    train = found.train[found.train[column] != value]
    pipeline = build_xgboost_pipeline(spec, {"n_estimators": 20})
    pipeline.set_params(encode__categorical__handle_unknown="error", encode__categorical__unknown_value=None)
    pipeline = Pipeline([*pipeline.steps[:2], ("identity", FunctionTransformer()), pipeline.steps[2]])
    pipeline.fit(train[spec.features], train[spec.target])
    return register_pipeline(found, pipeline, train), column, value


def slow_shadow(found: Champion) -> str:
    """A version served by its pipeline (an identity step keeps it from compiling) with 1,500 trees of depth 8.

    Each of its calls costs milliseconds of pandas and scikit-learn before 25 times the
    champion's trees: many times what the champion's compiled path takes for the same records.
    """
    spec = found.spec
    pipeline = build_xgboost_pipeline(spec, {"n_estimators": 1500, "max_depth": 8})
    pipeline = Pipeline([*pipeline.steps[:2], ("identity", FunctionTransformer()), pipeline.steps[2]])
    pipeline.fit(found.train[spec.features], found.train[spec.target])
    return register_pipeline(found, pipeline, found.train)


def set_alias(found: Champion, alias: str, version: str) -> None:
    tracking.client(found.tracking_uri).set_registered_model_alias(found.settings.model_name, alias, version)


def wait_rollout(url: str, **expected: Any) -> dict[str, Any]:
    """Poll ``/model-info`` until its ``rollout`` holds ``expected``; return it."""
    deadline = time.monotonic() + 180
    while True:
        rollout = httpx.get(f"{url}/model-info", timeout=10).json()["rollout"]
        if all(rollout[key] == value for key, value in expected.items()):
            return rollout
        assert time.monotonic() < deadline, f"rollout never became {expected}: {rollout}"
        time.sleep(0.3)


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        found = re.match(rf"^{name}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if found and all(f'{key}="{value}"' in (found.group(1) or "") for key, value in labels.items()):
            total += float(found.group(2))
    return total


def wait_until(check: Any, failure: str) -> None:
    deadline = time.monotonic() + 120
    while not check():
        assert time.monotonic() < deadline, failure
        time.sleep(0.3)


def off_path_rows(dsn: str, ids: list[str]) -> dict[tuple[str, str], tuple[str, float]]:
    """(prediction id, version) -> (role, price) of ``monitoring.rollout_predictions`` for ``ids``."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select prediction_id::text, model_version, role, prediction from monitoring.rollout_predictions"
            " where prediction_id = any(%s::uuid[])", (ids,))
        return {(pid, version): (role, price) for pid, version, role, price in cursor.fetchall()}


def logged(dsn: str, ids: list[str]) -> dict[str, tuple[str, str]]:
    """prediction id -> (model version, role) of ``monitoring.predictions`` for ``ids``."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select prediction_id::text, model_version, role from monitoring.predictions"
                       " where prediction_id = any(%s::uuid[])", (ids,))
        return {pid: (version, role) for pid, version, role in cursor.fetchall()}


def champion_prices(found: Champion, bodies: list[dict[str, Any]]) -> np.ndarray:
    import pandas as pd

    return found.pipeline.predict(pd.DataFrame(bodies, columns=found.spec.features))


# --- server tests -----------------------------------------------------------------------------


def test_a_shadow_that_raises_never_changes_the_champions_answer_or_status(model: Champion, tmp_path: Path) -> None:
    shadow, column, value = raising_shadow(model)
    bodies = records(model.spec, model.holdout)
    failing = [body for body in bodies if body[column] == value]
    fine = [body for body in bodies if body[column] != value]
    assert failing and fine
    server = Server(server_env(model.settings), log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        set_alias(model, SHADOW, shadow)
        assert wait_rollout(server.url, shadow_version=shadow) == {
            "shadow_version": shadow, "canary_version": None, "canary_share": 0.0}
        with httpx.Client(base_url=server.url, timeout=60) as client:
            singles = [client.post("/predict", json=body) for body in failing[:5] + fine[:5]]
            batch_failing = client.post("/predict", json=failing[:20] + fine[:20])
            batch_fine = client.post("/predict", json=fine[:40])
        answers = [*singles, batch_failing, batch_fine]
        assert [answer.status_code for answer in answers] == [200] * len(answers), [a.text for a in answers]
        sent = [failing[:5] + fine[:5], failing[:20] + fine[:20], fine[:40]]
        got = [a.json()["predictions"] for a in answers]
        single_prices = [p[0]["price"] for p in got[:10]]
        np.testing.assert_allclose(single_prices, champion_prices(model, sent[0]), rtol=1e-5)
        np.testing.assert_allclose([p["price"] for p in got[10]], champion_prices(model, sent[1]), rtol=1e-5)
        np.testing.assert_allclose([p["price"] for p in got[11]], champion_prices(model, sent[2]), rtol=1e-5)
        assert {p["model_version"] for answer in got for p in answer} == {model.version}
        wait_until(lambda: metric(server.url, "offpath_score_failures_total", model_version=shadow, role="shadow")
                   >= 5 + 40, "the shadow's failures were never counted")
        fine_ids = [p[0]["prediction_id"] for p in got[5:10]] + [p["prediction_id"] for p in got[11]]
        wait_until(lambda: len(off_path_rows(model.dsn, fine_ids)) == len(fine_ids),
                   "the shadow's scores of the records it can price were never written")
        failing_ids = [p[0]["prediction_id"] for p in got[:5]] + [p["prediction_id"] for p in got[10]]
        scored = off_path_rows(model.dsn, fine_ids + failing_ids)
    finally:
        server.stop()
    assert {key: role for key, (role, _) in scored.items()} == {(pid, shadow): "shadow" for pid in fine_ids}
    assert "failed to score" in (tmp_path / "server.log").read_text()


def test_a_slow_shadow_never_changes_the_champions_answer_or_status(model: Champion, tmp_path: Path) -> None:
    shadow = slow_shadow(model)
    bodies = records(model.spec, model.holdout)
    server = Server(server_env(model.settings), log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        set_alias(model, SHADOW, shadow)
        wait_rollout(server.url, shadow_version=shadow)
        outcomes = run_load(server.url, bodies, clients=8, seconds=8.0)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            batch = client.post("/predict", json=bodies[:50])
        assert batch.status_code == 200
        np.testing.assert_allclose([p["price"] for p in batch.json()["predictions"]],
                                   champion_prices(model, bodies[:50]), rtol=1e-5)
        ids = [p["prediction_id"] for p in batch.json()["predictions"]]
        wait_until(lambda: len(off_path_rows(model.dsn, ids)) == len(ids), "the slow shadow never wrote its scores")
        written = metric(server.url, "offpath_scores_written_total")
        dropped = metric(server.url, "offpath_scores_dropped_total", role="shadow")
    finally:
        server.stop()
    assert outcomes and all(o.status == 200 and o.versions == [model.version] for o in outcomes), \
        [o for o in outcomes if o.status != 200 or o.versions != [model.version]][:5]
    assert written + dropped >= len(outcomes) + 50


def test_the_canary_answers_its_share_and_falls_back_when_its_version_is_deleted(
    model: Champion, tmp_path: Path
) -> None:
    from price_platform.rollout import traffic

    challenger = model.register()
    client = tracking.client(model.tracking_uri)
    name = model.settings.model_name
    set_alias(model, "challenger", challenger)
    traffic.set_canary(model.tracking_uri, name, 0.5, dsn=model.dsn, actor="test")
    bodies = records(model.spec, model.holdout)[:60]
    server = Server(server_env(model.settings), log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        assert wait_rollout(server.url, canary_version=challenger) == {
            "shadow_version": None, "canary_version": challenger, "canary_share": 0.5}
        with httpx.Client(base_url=server.url, timeout=60) as http:
            first = [http.post("/predict", json=body).json()["predictions"][0] for body in bodies]
            again = [http.post("/predict", json=body).json()["predictions"][0] for body in bodies]
            versions = [p["model_version"] for p in first]
            assert versions == [p["model_version"] for p in again], "the canary is not sticky per body"
            assert 10 <= versions.count(challenger) <= 50, versions
            assert set(versions) == {model.version, challenger}
            wait_until(lambda: metric(server.url, "predictions_total", model_version=challenger, role="canary",
                                      outcome="ok") == 2 * versions.count(challenger),
                       "canary answers not counted by version and role")
            ids = [p["prediction_id"] for p in first]
            wait_until(lambda: len(logged(model.dsn, ids)) == len(ids), "answers never logged")
            assert logged(model.dsn, ids) == {
                p["prediction_id"]: (p["model_version"], "canary" if p["model_version"] == challenger else "champion")
                for p in first}
            canary_ids = [p["prediction_id"] for p in first if p["model_version"] == challenger]
            wait_until(lambda: len(off_path_rows(model.dsn, canary_ids)) == len(canary_ids),
                       "the champion never scored the canary's requests off the path")
            assert {role for role, _ in off_path_rows(model.dsn, ids).values()} == {"champion"}
            assert set(off_path_rows(model.dsn, ids)) == {(pid, model.version) for pid in canary_ids}

            client.delete_model_version(name, challenger)
            wait_rollout(server.url, canary_version=None)
            after = [http.post("/predict", json=body) for body in bodies]
            info = http.get("/model-info").json()
    finally:
        server.stop()
    assert [a.status_code for a in after] == [200] * len(after)
    assert {a.json()["predictions"][0]["model_version"] for a in after} == {model.version}
    assert client.get_registered_model(name).tags[CANARY_SHARE_TAG] == "0.5"  # only the version went away
    assert info["version"] == model.version and info["rollout"]["canary_share"] == 0.0


# --- in this process -------------------------------------------------------------------------


def test_the_canary_bucket_is_sticky_salted_by_version_and_takes_its_share() -> None:
    keys = [uuid.uuid4().bytes for _ in range(20_000)]
    share = np.mean([bucket(key, "7") < 0.1 for key in keys])
    assert 0.09 < share < 0.11
    assert [bucket(key, "7") for key in keys[:100]] == [bucket(key, "7") for key in keys[:100]]
    assert [bucket(key, "7") for key in keys[:100]] != [bucket(key, "8") for key in keys[:100]]
    assert Rollout(canary=None, share=1.0).canary_for(b"x") is None
    assert not NO_ROLLOUT.active


class _Failing:
    fast = False
    band = None

    def predict(self, rows: Any) -> np.ndarray:
        raise RuntimeError("shadow broken")


class _Doubling:
    fast = False
    band = None

    def predict(self, rows: Any) -> np.ndarray:
        return np.array([2.0 * row[0] for row in rows])


def _loaded(version: str, predictor: Any) -> LoadedModel:
    return LoadedModel("m", version, predictor, None, 0.2, {}, "", "", "")


class Record(msgspec.Struct):
    value: float


def test_the_scorer_drops_what_does_not_fit_and_a_failing_model_loses_only_its_own_rows(postgres) -> None:
    scorer = OffPathScorer(postgres.dsn(), capacity=5, quiet_seconds=0.0)
    good, bad = _loaded(f"good-{uuid.uuid4().hex[:6]}", _Doubling()), _loaded("bad", _Failing())
    dropped = metrics.OFFPATH_DROPPED.labels(role="shadow")._value.get()
    ids = [uuid.uuid4() for _ in range(4)]
    scorer._thread = object()  # not started yet: fill the queue first
    scorer.submit(good, "shadow", ids[:2], [Record(1.0), Record(2.0)])
    scorer.submit(bad, "shadow", ids[2:3], [Record(3.0)])
    scorer.submit(good, "shadow", ids[3:], [Record(4.0)] * 3)  # 3 more than the 5 rows fit
    assert scorer.waiting() == 3 and scorer.dropped == 3
    assert metrics.OFFPATH_DROPPED.labels(role="shadow")._value.get() == dropped + 3
    scorer._thread = None
    scorer.start()
    wait_until(lambda: scorer.written == 2 and scorer.failed == 1, "the scorer did not write its rows")
    scorer.stop()
    assert off_path_rows(postgres.dsn(), [str(i) for i in ids]) == {
        (str(ids[0]), good.version): ("shadow", 2.0), (str(ids[1]), good.version): ("shadow", 4.0)}


def test_the_prediction_log_writes_the_role_that_answered(postgres, champion: Champion) -> None:
    schemas = build_schemas(champion.spec, 10)
    record = msgspec.convert(records(champion.spec, champion.holdout)[0], schemas.record)
    log = PredictionLog(postgres.dsn(), capacity=10)
    ids = [uuid.uuid4(), uuid.uuid4()]
    log.start()
    log.add(LoggedPredictions(ids[:1], datetime.now(UTC), "3", [record], [1.0], [0.9], [1.1], 1.0, None, (), "canary"))
    log.add(LoggedPredictions(ids[1:], datetime.now(UTC), "2", [record], [1.0], [0.9], [1.1], 1.0, None))
    log.stop()
    assert logged(postgres.dsn(), [str(i) for i in ids]) == {str(ids[0]): ("3", "canary"), str(ids[1]): ("2", "champion")}
