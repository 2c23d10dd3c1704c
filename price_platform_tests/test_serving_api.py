"""The prediction API through the real ASGI app, on a champion registered on a real MLflow server."""

from __future__ import annotations

import gc
import math
import sys
import time
import uuid

import numpy as np
import psycopg2
import pytest
from litestar.testing import TestClient
from test_serving_support import HALF_WIDTH, Champion, champion, records, wait_ready  # noqa: F401 (fixture)

from serving import app as serving_app
from serving.app import SWITCH_INTERVAL_SECONDS, create_app
from serving.model_store import YOUNG_COLLECTION_THRESHOLD


@pytest.fixture(scope="module")
def client(champion: Champion):
    app = create_app(champion.settings, spec=champion.spec, dsn=champion.dsn)
    with TestClient(app) as test_client:
        wait_ready(test_client)
        yield test_client


def test_ready_is_503_until_a_model_is_loaded(champion: Champion) -> None:
    settings = champion.settings.model_copy(update={"model_name": f"no-such-model-{uuid.uuid4().hex[:6]}"})
    with TestClient(create_app(settings, spec=champion.spec, dsn=None)) as test_client:
        assert test_client.get("/health").status_code == 200
        ready = test_client.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        answer = test_client.post("/predict", json=records(champion.spec, champion.holdout.head(1))[0])
        assert answer.status_code == 503 and "no model" in answer.json()["detail"]


def test_the_young_generation_is_collected_less_often_once_a_model_serves(client: TestClient) -> None:
    assert client.get("/ready").status_code == 200
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD != 700


def test_the_server_process_hands_the_interpreter_lock_over_sooner(monkeypatch: pytest.MonkeyPatch) -> None:
    """``price-platform serve``'s app factory sets the switch interval (the app itself is not built here)."""
    monkeypatch.setattr(serving_app, "platform_dsn", lambda settings: None)
    monkeypatch.setattr(serving_app, "create_app", lambda settings, dsn: "app")
    before = sys.getswitchinterval()
    try:
        assert serving_app.app_from_environment() == "app"
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS) != before
    finally:
        sys.setswitchinterval(before)


def test_one_record_gets_price_interval_version_and_id(client: TestClient, champion: Champion) -> None:
    record = records(champion.spec, champion.holdout.head(1))[0]
    response = client.post("/predict", json=record)
    assert response.status_code == 200, response.text
    body = response.json()
    [prediction] = body["predictions"]
    expected = float(champion.pipeline.predict(champion.holdout.head(1)[champion.spec.features])[0])
    assert prediction["price"] == pytest.approx(expected, rel=1e-6)
    assert prediction["lower"] == pytest.approx(expected * math.exp(-HALF_WIDTH), rel=1e-9)
    assert prediction["upper"] == pytest.approx(expected * math.exp(HALF_WIDTH), rel=1e-9)
    assert prediction["model_version"] == body["model_version"] == client.get("/ready").json()["model_version"]
    uuid.UUID(prediction["prediction_id"])


def test_batch_answers_every_record_in_order(client: TestClient, champion: Champion) -> None:
    frame = champion.holdout.head(250)
    response = client.post("/predict", json=records(champion.spec, frame))
    assert response.status_code == 200, response.text
    prices = np.array([p["price"] for p in response.json()["predictions"]])
    expected = champion.pipeline.predict(frame[champion.spec.features])
    assert np.max(np.abs(prices - expected) / expected) < 1e-6
    assert len({p["prediction_id"] for p in response.json()["predictions"]}) == len(frame)


def test_no_predict_request_stays_expected_by_the_batcher(client: TestClient, champion: Champion) -> None:
    """A request the batcher still counted as on its way would make every later one wait ``batch_window_ms``."""
    record = records(champion.spec, champion.holdout.head(1))[0]
    statuses = [
        client.post("/predict", json={**record, "lot_area": 123_457}).status_code,  # predicted
        client.post("/predict", json={**record, "lot_area": 123_457}).status_code,  # from the cache
        client.post("/predict", json=records(champion.spec, champion.holdout.head(3))).status_code,  # a batch
        client.post("/predict", json={**record, "lot_area": "large"}).status_code,  # refused
        client.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"}).status_code,
    ]
    assert statuses == [200, 200, 200, 400, 400]
    assert client.app.state.services.batcher.expected == 0


def test_explain_contributions_add_up_to_the_prediction(client: TestClient, champion: Champion) -> None:
    record = records(champion.spec, champion.holdout.iloc[[3]])[0]
    explanation = client.post("/explain", json=record).json()
    price = client.post("/predict", json=record).json()["predictions"][0]["price"]
    assert set(explanation["contributions"]) == set(champion.spec.features)
    total = explanation["base_value"] + sum(explanation["contributions"].values())
    assert total == pytest.approx(explanation["log_price"], abs=1e-4)
    assert explanation["price"] == pytest.approx(price, rel=1e-4)
    per_column = explanation["model_feature_contributions"]
    assert set(champion.spec.derived) <= set(per_column)
    assert sum(per_column.values()) == pytest.approx(sum(explanation["contributions"].values()), abs=1e-6)


def test_model_info_reports_version_metrics_and_schema(client: TestClient, champion: Champion) -> None:
    info = client.get("/model-info").json()
    assert info["name"] == champion.settings.model_name and info["alias"] == "champion"
    assert info["data_version"] == "serving-test"
    assert info["metrics"] == {"holdout_rmsle": 0.1}
    assert info["fast_path"] is True
    assert set(info["feature_schema"]["$defs"][next(iter(info["feature_schema"]["$defs"]))]["properties"]) == set(
        champion.spec.features
    )


def test_predictions_and_feedback_are_logged(client: TestClient, champion: Champion) -> None:
    sent = records(champion.spec, champion.holdout.head(5))
    ids = [p["prediction_id"] for p in client.post("/predict", json=sent).json()["predictions"]]
    for actual in (99.0, 123456.0):  # reported twice: the last report is kept
        feedback = client.post("/feedback", json={"prediction_id": ids[0], "actual": actual})
        assert feedback.status_code == 202, feedback.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg2.connect(champion.dsn) as connection, connection.cursor() as cursor:
            cursor.execute("select prediction_id::text, features, key_id from monitoring.predictions"
                           " where prediction_id = any(%s::uuid[])", (ids,))
            logged = cursor.fetchall()
            cursor.execute("select actual from monitoring.actuals where prediction_id = %s", (ids[0],))
            actual = cursor.fetchone()
        if len(logged) == len(ids) and actual:
            break
        time.sleep(0.2)
    assert sorted(row[0] for row in logged) == sorted(ids)
    by_id = {row[0]: row[1] for row in logged}
    assert by_id[ids[2]] == sent[2]
    assert actual == (123456.0,)


def test_responses_are_gzipped_when_accepted(client: TestClient, champion: Champion) -> None:
    body = records(champion.spec, champion.holdout.head(50))
    response = client.post("/predict", json=body, headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    plain = client.post("/predict", json=body, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert len(plain.content) > 2 * int(response.headers["content-length"])
    assert [p["price"] for p in response.json()["predictions"]] == [p["price"] for p in plain.json()["predictions"]]
    one = client.post("/predict", json=body[0], headers={"Accept-Encoding": "gzip"})  # under the minimum size
    assert one.status_code == 200 and "content-encoding" not in one.headers
    other = client.get("/model-info", headers={"Accept-Encoding": "gzip"})  # the app's middleware, not /predict's own
    assert other.headers["content-encoding"] == "gzip" and other.json()["name"] == champion.settings.model_name


def test_openapi_docs_and_metrics_are_served(client: TestClient) -> None:
    schema = client.get("/schema/openapi.json").json()
    for path in ("/predict", "/explain", "/feedback", "/model-info", "/health", "/ready", "/metrics",
                 "/admin/reload", "/admin/rollback"):
        assert path in schema["paths"], path
    assert "PredictRequest" in schema["components"]["schemas"]
    answer = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/PredictResponse"}
    assert client.get("/schema/swagger").status_code == 200
    client.post("/predict", json={})
    text = client.get("/metrics").text
    for name in ("prediction_latency_seconds_bucket", "predictions_total", "model_load_events_total", "prediction_cache_total"):
        assert name in text
