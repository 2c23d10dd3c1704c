"""Model integrity and the no-pickle load path, against a real MLflow server, PostgreSQL and the API.

A stored artifact is changed behind the registry's back (as anyone who can write the MLflow
artifact store could): the API keeps serving its champion, counts, logs, audits and reports the
refusal; promotion and rollback refuse the changed version. A pickle artifact is refused
without being unpickled.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import uuid
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pytest
import skops.io
import yaml
from litestar.testing import TestClient
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from test_serving_support import records, wait_ready

from price_platform.datasets import load_dataset
from price_platform.modeling import build_blend_pipeline, build_xgboost_pipeline, read_sample
from price_platform.registry import CHAMPION, artifact_format, tracking
from price_platform.registry.artifact_format import UnsafeArtifactError, load_pipeline, save_pipeline
from price_platform.registry.champion import load_rival, load_version
from price_platform.registry.integrity import AUDIT_ACTION, IntegrityError, recorded_digests
from price_platform.registry.promotion import PromotionRefused, Verdict, deployments, promote, rollback
from price_platform.registry.versions import register_candidate
from price_platform.settings import Settings
from price_platform.warehouse import connect
from serving.app import create_app
from serving.fast_path import compile_pipeline

PASSED = lambda _champion: Verdict(True, "test")  # noqa: E731


@pytest.fixture(scope="module")
def fitted(settings: Settings):
    spec = load_dataset(settings.dataset)
    frame = read_sample(spec).head(600)
    pipeline = build_xgboost_pipeline(spec, {"n_estimators": 20}).fit(frame[spec.features], frame[spec.target])
    return spec, frame, pipeline


def _register(mlflow_server: str, dsn: str, name: str, fitted) -> str:
    spec, frame, pipeline = fitted
    return register_candidate(
        mlflow_server, name, pipeline, frame[spec.features], dsn=dsn,
        interval_log_halfwidth=0.2, data_version="integrity-test", metrics={"holdout_rmsle": 0.1},
    ).version


def _stored(mlflow_server: str, session_home: Path, name: str, version: str, relative: str) -> Path:
    """The file ``relative`` of a version's artifact as the MLflow server stores it."""
    client = tracking.client(mlflow_server)
    model_id = client.get_model_version(name, version).source.rsplit("/", 1)[-1]  # models:/m-...
    location = client.get_logged_model(model_id).artifact_location
    path = session_home / "mlartifacts" / location.split("mlflow-artifacts:/", 1)[1] / relative
    assert path.is_file(), path
    return path


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _audited(dsn: str, name: str) -> list[dict]:
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select detail from model_registry.audit_log where action = %s and detail->>'model_name' = %s order by id",
            (AUDIT_ACTION, name),
        )
        return [row[0] for row in cursor.fetchall()]


def _refusals(metrics_text: str, reason: str) -> float:
    found = re.search(rf'^model_artifact_refusals_total{{reason="{reason}"}} ([0-9.e+]+)$', metrics_text, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_pipeline_round_trips_without_pickle_and_keeps_the_fast_path(settings: Settings, tmp_path) -> None:
    spec = load_dataset(settings.dataset)
    frame = read_sample(spec).head(600)
    rows = frame[spec.features].tail(50)
    blend = build_blend_pipeline(spec, {"n_estimators": 20}).fit(frame[spec.features], frame[spec.target])
    folder = save_pipeline(blend, tmp_path / "serving")
    assert sorted(p.name for p in folder.iterdir()) == ["booster-0.ubj", "layout.json", "pipeline.skops"]
    assert (folder / "booster-0.ubj").read_bytes()[:1] == b"{"  # UBJSON object, XGBoost's own format
    loaded = load_pipeline(folder)
    np.testing.assert_array_equal(loaded.predict(rows), blend.predict(rows))
    compiled = compile_pipeline(loaded, spec.features)
    assert compiled.fast
    np.testing.assert_allclose(compiled.predict(list(rows.itertuples(index=False))), blend.predict(rows), rtol=1e-6)


def test_a_pipeline_holding_an_untrusted_function_is_neither_saved_nor_loaded(tmp_path) -> None:
    hostile = Pipeline([("run", FunctionTransformer(os.system))])
    with pytest.raises(UnsafeArtifactError, match="types serving does not trust: posix.system"):
        save_pipeline(hostile, tmp_path / "refused")
    folder = tmp_path / "planted"
    folder.mkdir()
    skops.io.dump(hostile, folder / artifact_format.PIPELINE_FILE)
    (folder / artifact_format.LAYOUT_FILE).write_text(f'{{"format": "{artifact_format.FORMAT}", "boosters": []}}')
    with pytest.raises(UnsafeArtifactError, match="untrusted types: posix.system"):
        load_pipeline(folder)


def test_registration_records_every_file_and_the_run_keeps_a_pyfunc_flavour(
    mlflow_server, postgres, session_home, fitted
) -> None:
    spec, frame, pipeline = fitted
    name = f"integrity-{uuid.uuid4().hex[:6]}"
    version = _register(mlflow_server, postgres.dsn(), name, fitted)
    digests = recorded_digests(postgres.dsn(), name, version)
    assert {"MLmodel", "data/serving/pipeline.skops", "data/serving/booster-0.ubj", "data/serving/layout.json"} <= set(digests)
    assert not any(path.endswith((".pkl", ".pickle")) for path in digests)
    mlmodel = yaml.safe_load(_stored(mlflow_server, session_home, name, version, "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "price_platform.registry.artifact_format"
    with tracking.using(mlflow_server):
        served = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    rows = frame[spec.features].tail(10)
    np.testing.assert_allclose(served.predict(rows), pipeline.predict(rows))


def test_a_tampered_artifact_keeps_the_champion_serving_and_is_counted_logged_audited_and_shown(
    mlflow_server, postgres, session_home, settings, fitted, caplog
) -> None:
    spec, frame, _ = fitted
    dsn = postgres.dsn()
    name = f"integrity-{uuid.uuid4().hex[:6]}"
    first = _register(mlflow_server, dsn, name, fitted)
    promote(mlflow_server, name, first, dsn=dsn, actor="test", check=PASSED)
    second = _register(mlflow_server, dsn, name, fitted)
    _tamper(_stored(mlflow_server, session_home, name, second, "data/serving/booster-0.ubj"))

    with pytest.raises(IntegrityError, match=r"changed: data/serving/booster-0.ubj"):
        load_version(mlflow_server, name, second, dsn=dsn)
    with pytest.raises(IntegrityError):  # a changed champion is never quietly skipped by the gate
        load_rival(mlflow_server, name, second, dsn=dsn)
    with pytest.raises(PromotionRefused, match="artifact check failed: .*changed: data/serving/booster-0.ubj"):
        promote(mlflow_server, name, second, dsn=dsn, actor="promoter", check=PASSED)
    assert deployments(dsn, name)[-1].action == "refuse"
    assert _audited(dsn, name)[-1]["where"] == "promotion"

    serving = settings.model_copy(update={
        "model_name": name, "mlflow_tracking_uri": mlflow_server, "auth_enabled": False, "model_poll_seconds": 3600.0,
    })
    with TestClient(create_app(serving, spec=spec, dsn=dsn)) as client:
        wait_ready(client)
        before = _refusals(client.get("/metrics").text, "integrity")
        # Someone with write access to MLflow moves the alias to the changed version themselves.
        tracking.client(mlflow_server).set_registered_model_alias(name, CHAMPION, second)
        with caplog.at_level(logging.ERROR, logger="serving.model_store"):
            reloaded = client.post("/admin/reload", json={"reason": "integrity test"})
        assert reloaded.status_code == 200 and reloaded.json()["to_version"] == first
        info = client.get("/model-info").json()
        assert info["version"] == first and info["artifact_verified"] is True
        [refusal] = info["artifact_refusals"]
        assert (refusal["version"], refusal["reason"]) == (second, "integrity")
        assert "changed: data/serving/booster-0.ubj" in refusal["detail"]
        assert _refusals(client.get("/metrics").text, "integrity") == before + 1
        answer = client.post("/predict", json=records(spec, frame.head(1))[0])
        assert answer.status_code == 200 and answer.json()["model_version"] == first
    assert any(f"version {second}" in r.getMessage() and "does not match" in r.getMessage() for r in caplog.records)
    api_rows = [row for row in _audited(dsn, name) if row["version"] == second and row["where"].startswith("admin reload")]
    assert len(api_rows) == 1 and api_rows[0]["kind"] == "IntegrityError"


def test_rollback_refuses_a_tampered_earlier_champion(mlflow_server, postgres, session_home, fitted) -> None:
    dsn = postgres.dsn()
    name = f"integrity-{uuid.uuid4().hex[:6]}"
    first = _register(mlflow_server, dsn, name, fitted)
    promote(mlflow_server, name, first, dsn=dsn, actor="test", check=PASSED)
    second = _register(mlflow_server, dsn, name, fitted)
    promote(mlflow_server, name, second, dsn=dsn, actor="test", check=PASSED)
    _tamper(_stored(mlflow_server, session_home, name, first, "data/serving/pipeline.skops"))
    with pytest.raises(PromotionRefused, match=r"rollback .* refused: artifact check failed: .*changed: data/serving/pipeline.skops"):
        rollback(mlflow_server, name, dsn=dsn, actor="on-call")
    assert tracking.version_by_alias(tracking.client(mlflow_server), name, CHAMPION).version == second
    assert _audited(dsn, name)[-1]["where"] == "rollback"


class _Planted:
    """Unpickling this writes a marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_a_pickled_model_is_refused_without_being_unpickled(mlflow_server, postgres, session_home, settings, fitted, tmp_path) -> None:
    spec, frame, pipeline = fitted
    dsn = postgres.dsn()
    name = f"legacy-{uuid.uuid4().hex[:6]}"
    with tracking.using(mlflow_server):
        mlflow.set_experiment(name)
        with mlflow.start_run():
            logged = mlflow.sklearn.log_model(
                pipeline, name="model", serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                registered_model_name=name,
            )
    version = str(logged.registered_model_version)
    marker = tmp_path / "marker"
    _stored(mlflow_server, session_home, name, version, "model.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(UnsafeArtifactError, match="saved as a cloudpickle .* retrain it .* or re-register"):
        load_version(mlflow_server, name, version, dsn=dsn)
    with pytest.raises(PromotionRefused, match="artifact check failed: .*cloudpickle"):
        promote(mlflow_server, name, version, dsn=dsn, actor="test", check=PASSED)
    # As the champion a retrained challenger is measured against, it counts as no champion.
    assert load_rival(mlflow_server, name, version, dsn=dsn) is None
    assert not marker.exists()


def test_the_promote_and_rollback_commands_refuse_a_tampered_version(
    mlflow_server, postgres, session_home, settings, fitted, monkeypatch, capsys
) -> None:
    from price_platform.cli import main
    from price_platform.settings import get_settings

    dsn = postgres.dsn()
    name = f"integrity-{uuid.uuid4().hex[:6]}"
    first = _register(mlflow_server, dsn, name, fitted)
    promote(mlflow_server, name, first, dsn=dsn, actor="test", check=PASSED)
    second = _register(mlflow_server, dsn, name, fitted)
    _tamper(_stored(mlflow_server, session_home, name, second, "MLmodel"))
    for variable, value in {
        "DATABASE_URL": settings.database_url, "DATABASE_NAME": settings.database_name, "HOME": str(session_home),
        "MLFLOW_TRACKING_URI": mlflow_server, "MODEL_NAME": name,
    }.items():
        monkeypatch.setenv(f"PRICE_PLATFORM_{variable}", value)
    get_settings.cache_clear()
    try:
        assert main(["promote", second, "--actor", "on-call"]) == 1
        error = capsys.readouterr().err
        assert f"promotion of {name} version {second} refused: artifact check failed" in error and "changed: MLmodel" in error
        third = _register(mlflow_server, dsn, name, fitted)
        promote(mlflow_server, name, third, dsn=dsn, actor="test", check=PASSED)
        _tamper(_stored(mlflow_server, session_home, name, first, "data/serving/layout.json"))
        # The rollback target is the version the champion replaced: the changed one.
        assert main(["rollback", "--actor", "on-call"]) == 1
        assert "changed: data/serving/layout.json" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
    assert tracking.version_by_alias(tracking.client(mlflow_server), name, CHAMPION).version == third
    assert [row["where"] for row in _audited(dsn, name)] == ["promotion", "rollback"]
