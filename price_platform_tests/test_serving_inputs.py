"""Every kind of bad request gets a 4xx naming the record and field, and nothing is predicted or logged."""

from __future__ import annotations

import json

import pytest
from litestar.testing import TestClient
from test_serving_support import Champion, champion, records, wait_ready  # noqa: F401 (fixture)

from serving.app import create_app


@pytest.fixture(scope="module")
def client(champion: Champion):
    app = create_app(champion.settings, spec=champion.spec, dsn=champion.dsn)
    with TestClient(app) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def good(champion: Champion) -> list[dict]:
    return records(champion.spec, champion.holdout.head(3))


def changed(record: dict, **fields) -> dict:
    return {**record, **fields}


def without(record: dict, name: str) -> dict:
    return {key: value for key, value in record.items() if key != name}


CASES = {
    "unknown field": (lambda r: changed(r, bogus=1), None, "bogus", "unknown field"),
    "missing field": (lambda r: without(r, "lot_area"), None, "lot_area", "missing required field"),
    "wrong type": (lambda r: changed(r, lot_area=[1]), None, "lot_area", "Expected `int`"),
    "string for a number": (lambda r: changed(r, gr_liv_area="1500"), None, "gr_liv_area", "got `str`"),
    "float for an integer": (lambda r: changed(r, full_bath=1.5), None, "full_bath", "got `float`"),
    "below the minimum": (lambda r: changed(r, lot_area=-1), None, "lot_area", ">= 0"),
    "above the maximum": (lambda r: changed(r, latitude=91.0), None, "latitude", "<= 90"),
    "unknown category": (lambda r: changed(r, neighborhood="Atlantis"), None, "neighborhood", "Invalid enum value"),
    "null where not nullable": (lambda r: changed(r, street=None), None, "street", "got `null`"),
    "bad record in a batch": (lambda r: [r, r, changed(r, lot_area="x")], 2, "lot_area", "got `str`"),
    "unknown field in a batch": (lambda r: [r, changed(r, extra=True)], 1, "extra", "unknown field"),
}


def logged(client: TestClient) -> int:
    return client.app.state.services.log.accepted


@pytest.mark.parametrize("case", CASES)
def test_bad_record_is_a_400_naming_record_and_field(client: TestClient, good: list[dict], case: str) -> None:
    make, record, field, text = CASES[case]
    before = logged(client)
    response = client.post("/predict", json=make(good[0]))
    assert response.status_code == 400, response.text
    body = response.json()
    assert text in body["detail"] and f"field `{field}`" in body["detail"]
    assert body["extra"] == {"record": record, "field": field}
    if record is not None:
        assert f"record {record}" in body["detail"]
    assert logged(client) == before


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_by_field(client: TestClient, good: list[dict], literal: str) -> None:
    body = json.dumps([good[0], good[1]]).replace('"latitude": ', '"latitude": X', 2)
    body = body.replace(f'"latitude": X{good[0]["latitude"]}', f'"latitude": {literal}', 1).replace("X", "")
    response = client.post("/predict", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["extra"] == {"record": 0, "field": "latitude"}
    assert "not a finite number" in response.json()["detail"]


def test_number_too_large_for_a_float_is_refused(client: TestClient, good: list[dict]) -> None:
    body = json.dumps(good[0]).replace(f'"longitude": {good[0]["longitude"]}', '"longitude": 1e999')
    response = client.post("/predict", content=body.encode())
    assert response.status_code == 400 and response.json()["extra"]["field"] == "longitude", response.text


def test_empty_and_oversized_batches_are_refused(client: TestClient, champion: Champion, good: list[dict]) -> None:
    before = logged(client)
    empty = client.post("/predict", json=[])
    assert empty.status_code == 400 and "length >= 1" in empty.json()["detail"]
    limit = champion.settings.max_batch_size
    over = client.post("/predict", json=[good[0]] * (limit + 1))
    assert over.status_code == 400 and f"length <= {limit}" in over.json()["detail"], over.text
    assert logged(client) == before


@pytest.mark.parametrize(
    ("body", "text"),
    [(b"", "body is empty"), (b"{", "not valid JSON"), (b'"a record"', "Expected `object | array`"), (b"[1]", "record 0")],
)
def test_bodies_that_are_not_records_are_refused(client: TestClient, body: bytes, text: str) -> None:
    response = client.post("/predict", content=body)
    assert response.status_code == 400 and text in response.json()["detail"], response.text


def test_body_over_the_size_limit_is_413(client: TestClient, champion: Champion) -> None:
    response = client.post("/predict", content=b"[" + b" " * champion.settings.max_body_bytes + b"]")
    assert response.status_code == 413


def test_explain_takes_exactly_one_record(client: TestClient, good: list[dict]) -> None:
    response = client.post("/explain", json=good[:2])
    assert response.status_code == 400 and "Expected `object`" in response.json()["detail"]
    response = client.post("/explain", json=changed(good[0], pool_area="big"))
    assert response.json()["extra"] == {"record": None, "field": "pool_area"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prediction_id": "not-a-uuid", "actual": 1.0}, "prediction_id"),
        ({"prediction_id": "7f1c0e9e-9d8f-4a5e-9f1e-0d6c2b8a1e11", "actual": -5}, "actual"),
        ({"prediction_id": "7f1c0e9e-9d8f-4a5e-9f1e-0d6c2b8a1e11"}, "actual"),
        ({"prediction_id": "7f1c0e9e-9d8f-4a5e-9f1e-0d6c2b8a1e11", "actual": "100"}, "actual"),
    ],
)
def test_bad_feedback_is_refused_by_field(client: TestClient, body: dict, field: str) -> None:
    actuals = len(client.app.state.services.log._actuals)
    response = client.post("/feedback", json=body)
    assert response.status_code == 400 and response.json()["extra"]["field"] == field, response.text
    assert len(client.app.state.services.log._actuals) == actuals
