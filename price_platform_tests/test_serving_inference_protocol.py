"""The Open Inference Protocol (v2) routes, driven by Triton's own HTTP client against a real server process.

``price-platform serve`` runs with keys checked; ``tritonclient.http.InferenceServerClient`` asks
for liveness, readiness and the model's metadata and sends one ``InferInput`` per feature. Its
prices must be ``/predict``'s for the same records, its predictions logged under the caller's key,
and a bad tensor must get a 400 naming the feature while nothing of it is priced or logged.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg2
import pytest
import tritonclient.http as triton
from test_serving_support import Champion, Server, champion, records, server_env  # noqa: F401 (fixture)
from tritonclient.utils import InferenceServerException

from serving.auth import HEADER, create_key


@pytest.fixture(scope="module")
def served(champion: Champion, tmp_path_factory: pytest.TempPathFactory):
    """A server with keys checked, serving a champion of its own; yields (server, champion, key id, key)."""
    settings = champion.settings.model_copy(update={"model_name": f"oip-{uuid.uuid4().hex[:6]}"})
    own = Champion(settings, champion.spec, champion.pipeline, champion.train, champion.holdout, champion.tracking_uri, champion.dsn)
    version = own.register()
    own.promote(version)
    key_id, key = create_key(champion.dsn, "predict", "inference protocol test")
    home = tmp_path_factory.mktemp("inference-protocol")
    server = Server(server_env(settings, auth_enabled=True, redis_url=""), log_path=home / "server.log")
    try:
        server.wait_ready()
        yield server, Champion(settings, champion.spec, champion.pipeline, champion.train, champion.holdout,
                               champion.tracking_uri, champion.dsn, version), key_id, key
    finally:
        server.stop()


def client_of(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def complete_rows(found: Champion, count: int) -> pd.DataFrame:
    """Rows without a missing value (a BYTES tensor from numpy cannot carry one), holdout first."""
    frame = pd.concat([found.holdout, found.train], ignore_index=True)[found.spec.features]
    return frame[frame.notna().all(axis=1)].head(count).reset_index(drop=True)


def tensors(found: Champion, frame: pd.DataFrame, *, column: bool = False) -> list[triton.InferInput]:
    """One ``InferInput`` per feature, of the datatype the model's metadata lists; shape [n] (or [n, 1])."""
    inputs = []
    for name in found.spec.features:
        if name in found.spec.numeric:
            integer = found.spec.numeric[name].integer
            values, datatype = frame[name].to_numpy(np.int64 if integer else np.float64), "INT64" if integer else "FP64"
        else:
            values, datatype = frame[name].to_numpy(object).astype(str).astype(object), "BYTES"
        if column:
            values = values.reshape(-1, 1)
        tensor = triton.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=False)
        inputs.append(tensor)
    return inputs


def predict_prices(server: Server, key: str, sent: list[dict[str, Any]]) -> list[float]:
    answer = httpx.post(f"{server.url}/predict", json=sent, headers={HEADER: key}, timeout=60)
    assert answer.status_code == 200, answer.text
    return [p["price"] for p in answer.json()["predictions"]]


def logged(dsn: str, key_id: str) -> list[tuple[str, Any]]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select prediction_id::text, features from monitoring.predictions where key_id = %s", (key_id,))
        return cursor.fetchall()


def wait_logged(dsn: str, key_id: str, count: int) -> list[tuple[str, Any]]:
    """The rows logged under ``key_id`` once there are at least ``count`` (the writer flushes in the background)."""
    deadline = time.monotonic() + 30
    rows = logged(dsn, key_id)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = logged(dsn, key_id)
    return rows


def test_health_readiness_and_metadata_through_the_triton_client(served) -> None:
    server, found, _, key = served
    client = client_of(server)
    name = found.settings.model_name
    assert client.is_server_live() and client.is_server_ready()  # public, like /health and /ready
    assert client.is_model_ready(name, headers={HEADER: key})
    assert not client.is_model_ready("no-such-model", headers={HEADER: key})
    metadata = client.get_model_metadata(name, headers={HEADER: key})
    assert metadata["name"] == name and metadata["versions"] == [found.version] and metadata["platform"]
    expected = [
        (feature, ("INT64" if found.spec.numeric[feature].integer else "FP64") if feature in found.spec.numeric else "BYTES")
        for feature in found.spec.features
    ]
    assert [(tensor["name"], tensor["datatype"]) for tensor in metadata["inputs"]] == expected
    assert all(tensor["shape"] == [-1] for tensor in metadata["inputs"])
    assert [tensor["name"] for tensor in metadata["outputs"]] == ["price", "lower", "upper", "prediction_id", "capped"]


def test_inference_gives_predicts_prices_and_logs_them_under_the_key(served) -> None:
    server, found, key_id, key = served
    frame = complete_rows(found, 40)
    assert len(frame) >= 10
    sent = records(found.spec, frame)
    client = client_of(server)
    result = client.infer(found.settings.model_name, tensors(found, frame), headers={HEADER: key}, request_id="r-1")
    answer = result.get_response()
    assert answer["model_name"] == found.settings.model_name and answer["model_version"] == found.version
    assert answer["id"] == "r-1"
    prices = result.as_numpy("price")
    assert prices.shape == (len(sent),) and prices.dtype == np.float64
    assert prices.tolist() == pytest.approx(predict_prices(server, key, sent), rel=1e-12)
    lower, upper = result.as_numpy("lower"), result.as_numpy("upper")
    assert np.all(lower < prices) and np.all(prices < upper)
    assert result.as_numpy("capped").dtype == np.bool_
    ids = [value.decode() if isinstance(value, bytes) else str(value) for value in result.as_numpy("prediction_id")]
    assert len({uuid.UUID(i) for i in ids}) == len(sent)
    by_id = dict(wait_logged(found.dsn, key_id, 2 * len(sent)))  # these and /predict's
    assert set(ids) <= set(by_id)
    assert by_id[ids[3]] == sent[3]


def test_column_tensors_named_outputs_and_missing_values_in_json(served) -> None:
    server, found, _, key = served
    frame = complete_rows(found, 5)
    client = client_of(server)
    outputs = [triton.InferRequestedOutput("price", binary_data=False)]
    result = client.infer(found.settings.model_name, tensors(found, frame, column=True), outputs=outputs,
                          headers={HEADER: key})
    assert [output["name"] for output in result.get_response()["outputs"]] == ["price"]
    assert result.as_numpy("price").tolist() == pytest.approx(predict_prices(server, key, records(found.spec, frame)), rel=1e-12)

    holdout = found.holdout.head(30)
    with_gaps = records(found.spec, holdout[holdout[found.spec.features].isna().any(axis=1)].head(5))
    assert with_gaps, "the holdout has records with missing values"
    body = {"inputs": [
        {"name": name, "shape": [len(with_gaps)], "data": [record[name] for record in with_gaps],
         "datatype": ("INT64" if found.spec.numeric[name].integer else "FP64") if name in found.spec.numeric else "BYTES"}
        for name in found.spec.features
    ]}
    answer = httpx.post(f"{server.url}/v2/models/{found.settings.model_name}/infer", json=body, headers={HEADER: key}, timeout=60)
    assert answer.status_code == 200, answer.text
    price = next(output for output in answer.json()["outputs"] if output["name"] == "price")
    assert price["shape"] == [len(with_gaps)] and price["datatype"] == "FP64"
    assert price["data"] == pytest.approx(predict_prices(server, key, with_gaps), rel=1e-12)


def _refused(client: triton.InferenceServerClient, name: str, inputs: list[triton.InferInput], key: str) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as raised:
        client.infer(name, inputs, headers={HEADER: key})
    return raised.value


def test_bad_tensors_get_a_400_naming_the_feature_and_nothing_is_logged(served) -> None:
    server, found, _, _ = served
    key_id, key = create_key(found.dsn, "predict", "inference protocol bad tensors")
    spec, name, client = found.spec, found.settings.model_name, client_of(server)
    frame = complete_rows(found, 3)
    numeric = next(feature for feature, column in spec.numeric.items() if column.max is not None)
    categorical = next(iter(spec.categorical))

    wrong_type = tensors(found, frame)
    at = spec.features.index(numeric)
    wrong_type[at] = triton.InferInput(numeric, [3], "BYTES")
    wrong_type[at].set_data_from_numpy(np.array(["1", "2", "3"], dtype=object), binary_data=False)
    error = _refused(client, name, wrong_type, key)
    assert error.status() == "400" and f"`{numeric}`" in error.message() and "BYTES" in error.message()

    missing = [tensor for tensor in tensors(found, frame) if tensor.name() != categorical]
    error = _refused(client, name, missing, key)
    assert error.status() == "400" and f"`{categorical}`" in error.message() and "missing" in error.message()

    wide = tensors(found, frame)
    wide[at] = triton.InferInput(numeric, [3, 2], "FP64")
    wide[at].set_data_from_numpy(np.ones((3, 2)), binary_data=False)
    error = _refused(client, name, wide, key)
    assert error.status() == "400" and f"`{numeric}`" in error.message() and "shape [3, 2]" in error.message()

    far = frame.copy()
    far.loc[1, numeric] = spec.numeric[numeric].max + 1000
    error = _refused(client, name, tensors(found, far), key)
    assert error.status() == "400" and f"record 1, field `{numeric}`" in error.message(), error.message()

    good = client.infer(name, tensors(found, frame.head(1)), headers={HEADER: key})
    rows = wait_logged(found.dsn, key_id, 1)
    time.sleep(1.0)  # anything queued before the good request would have been written with it
    assert [row[0] for row in logged(found.dsn, key_id)] == [row[0] for row in rows]
    assert len(rows) == 1 and rows[0][0] == str(good.as_numpy("prediction_id")[0])


def test_wrong_model_name_is_404_and_no_key_is_401(served) -> None:
    server, found, _, key = served
    client = client_of(server)
    inputs = tensors(found, complete_rows(found, 1))
    error = _refused(client, "no-such-model", inputs, key)
    assert error.status() == "404" and found.settings.model_name in error.message()
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("no-such-model", headers={HEADER: key})
    assert raised.value.status() == "404"
    with pytest.raises(InferenceServerException) as raised:
        client.infer(found.settings.model_name, inputs)
    assert raised.value.status() == "401" and HEADER in raised.value.message()
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata(found.settings.model_name)
    assert raised.value.status() == "401"
    assert not client.is_model_ready(found.settings.model_name)
    versioned = httpx.get(f"{server.url}/v2/models/{found.settings.model_name}/versions/1/ready", headers={HEADER: key})
    assert versioned.status_code == 404 and "no versions in the path" in versioned.json()["error"]
