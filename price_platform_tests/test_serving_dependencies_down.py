"""The API when what it depends on is away: MLflow at start-up and at reload, Redis under the rate limit.

- MLflow unreachable at start-up: the API starts, ``/health`` answers, ``/ready`` is 503 (and
  says why), predictions are 503, never 500.
- MLflow stopped after the champion is loaded (an MLflow server of the test's own, on the
  session's registry database), then a promotion and a reload: the loaded model keeps answering
  with 200s, and ``/ready`` or ``/model-info`` says why the reload failed.
- Redis stopped under the rate limit (a redis-server of the test's own): requests over the
  limit still get 429 from the in-process counter, which already holds this process's requests
  of the minute, and nothing answers 5xx.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import free_port, wait_for_port, which
from litestar.testing import TestClient
from test_serving_support import Champion, add_versions, champion, records, wait_ready  # noqa: F401 (fixture)

from price_platform.postgres import PostgresServer
from serving.app import create_app
from serving.auth import create_key

LIMIT = 10


def start_mlflow(postgres: PostgresServer, session_home: Path, log_path: Path) -> tuple[str, subprocess.Popen]:
    """An MLflow server of the test's own over the session's registry database and artifact folder."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(
        [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", postgres.url("mlflow"), "--artifacts-destination", str(session_home / "mlartifacts"),
         "--workers", "1"],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env,
    )
    wait_for_port(port, timeout=600, process=process)  # a loaded machine starts MLflow slowly; it fails if it exits
    return f"http://127.0.0.1:{port}", process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def own_champion(champion: Champion, prefix: str, **updates: Any) -> Champion:
    """A registered model of this test's own (version 1 promoted), served with ``updates`` to the settings."""
    settings = champion.settings.model_copy(update={"model_name": f"{prefix}-{uuid.uuid4().hex[:6]}", **updates})
    own = Champion(settings, champion.spec, champion.pipeline, champion.train, champion.holdout, champion.tracking_uri,
                   champion.dsn)
    own.promote(own.register())
    return own


# --- MLflow unreachable at start-up -------------------------------------------------------------


@pytest.fixture(scope="module")
def started_without_mlflow(champion: Champion) -> Iterator[dict[str, Any]]:
    """What the API answered while the registry it was given never answered."""
    settings = champion.settings.model_copy(
        update={"mlflow_tracking_uri": f"http://127.0.0.1:{free_port()}", "model_poll_seconds": 0.5}
    )
    record = records(champion.spec, champion.holdout.head(1))[0]
    with TestClient(create_app(settings, spec=champion.spec, dsn=champion.dsn)) as client:
        time.sleep(3)  # several start-up attempts to read the registry have failed by now
        answers = {
            "health": [client.get("/health") for _ in range(3)],
            "ready": [client.get("/ready") for _ in range(3)],
            "predict": client.post("/predict", json=record),
            "model-info": client.get("/model-info"),
        }
        yield answers


def test_without_mlflow_the_api_starts_health_answers_and_ready_is_503(started_without_mlflow) -> None:
    answers = started_without_mlflow
    assert [a.status_code for a in answers["health"]] == [200] * 3
    assert [a.status_code for a in answers["ready"]] == [503] * 3
    assert answers["predict"].status_code == 503 and answers["predict"].headers["Retry-After"]
    assert answers["model-info"].status_code == 503


def test_without_mlflow_ready_says_why(started_without_mlflow) -> None:
    body = started_without_mlflow["ready"][-1].text.lower()
    assert "mlflow" in body or "registry" in body, body


# --- MLflow stopped after the champion is loaded --------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_stopped_after_loading(champion: Champion, postgres, session_home: Path, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """What the API answered after its MLflow stopped and the champion alias moved on (seen by another server)."""
    log_path = tmp_path_factory.mktemp("mlflow-own") / "mlflow.log"
    url, process = start_mlflow(postgres, session_home, log_path)
    try:
        own = own_champion(champion, "mlflow-stop", mlflow_tracking_uri=url, auth_enabled=True,
                           unauthorized_per_minute=1_000_000, model_poll_seconds=0.5)
        _, admin_key = create_key(champion.dsn, "admin", "mlflow stopped test")
        admin = {"X-API-Key": admin_key}
        record = records(champion.spec, champion.holdout.head(1))[0]
        with TestClient(create_app(own.settings, spec=champion.spec, dsn=champion.dsn)) as client:
            loaded = wait_ready(client)
            stop(process)
            [second] = add_versions(own, 1)
            own.promote(second)  # through the session's MLflow: the API's own is gone
            time.sleep(3)  # several alias polls have failed by now
            answers = {
                "loaded": loaded,
                "second": second,
                "predict": [client.post("/predict", json=record, headers=admin) for _ in range(20)],
                "reload": client.post("/admin/reload", json={"reason": "promotion"}, headers=admin),
                "rollback": client.post("/admin/rollback", json={"reason": "probe"}, headers=admin),
                "ready": client.get("/ready"),
                "model-info": client.get("/model-info", headers=admin),
                "health": client.get("/health"),
            }
            answers["after"] = [client.post("/predict", json=record, headers=admin) for _ in range(5)]
            yield answers
    finally:
        if process.poll() is None:
            stop(process)


def test_with_mlflow_stopped_the_loaded_model_keeps_answering(mlflow_stopped_after_loading) -> None:
    answers = mlflow_stopped_after_loading
    assert answers["loaded"]["model_version"] == "1"
    for answer in [*answers["predict"], *answers["after"]]:
        assert answer.status_code == 200, answer.text
        assert [p["model_version"] for p in answer.json()["predictions"]] == ["1"]
    assert answers["ready"].status_code == 200 and answers["ready"].json()["model_version"] == "1"
    assert answers["health"].status_code == 200
    assert answers["model-info"].status_code == 200 and answers["model-info"].json()["version"] == "1"
    assert answers["reload"].status_code < 500 or answers["reload"].status_code == 503, answers["reload"].text


def test_with_mlflow_stopped_ready_or_model_info_says_why_the_reload_failed(mlflow_stopped_after_loading) -> None:
    answers = mlflow_stopped_after_loading
    said = (answers["ready"].text + answers["model-info"].text).lower()
    assert "mlflow" in said or "registry" in said, said
    assert answers["reload"].status_code == 503, answers["reload"].text


def test_with_mlflow_stopped_rollback_is_a_503_that_names_the_registry(mlflow_stopped_after_loading) -> None:
    answer = mlflow_stopped_after_loading["rollback"]
    assert answer.status_code == 503, answer.text
    assert "registry" in answer.text.lower() or "mlflow" in answer.text.lower(), answer.text


# --- Redis stopped under the rate limit ---------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen]]:
    port = free_port()
    process = subprocess.Popen(
        [which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process=process)
    yield port, process
    if process.poll() is None:
        stop(process)


def test_with_redis_stopped_requests_over_the_limit_still_get_429(champion: Champion, own_redis) -> None:
    port, process = own_redis
    settings = champion.settings.model_copy(update={
        "redis_url": f"redis://127.0.0.1:{port}/0", "rate_limit_per_minute": LIMIT, "auth_enabled": True,
        "unauthorized_per_minute": 1_000_000,
    })
    key_id, key = create_key(champion.dsn, "predict", "redis down test")
    headers = {"X-API-Key": key}
    record = records(champion.spec, champion.holdout.head(1))[0]
    with TestClient(create_app(settings, spec=champion.spec, dsn=champion.dsn)) as client:
        wait_ready(client)
        if time.time() % 60 > 40:  # the limit counts per calendar minute: run inside one
            time.sleep(61 - time.time() % 60)
        before = [client.post("/predict", json=record, headers=headers) for _ in range(4)]
        counted = redis.Redis(port=port).keys(f"price-platform:ratelimit:{key_id}:*")
        stop(process)
        after = [client.post("/predict", json=record, headers=headers) for _ in range(LIMIT + 5)]
    assert [a.status_code for a in before] == [200] * 4
    assert counted, "the requests before the outage were not counted in Redis"
    statuses = [a.status_code for a in after]
    assert all(status < 500 for status in statuses), statuses
    # the minute's four earlier requests still count: six more are allowed, the rest refused
    assert statuses == [200] * (LIMIT - 4) + [429] * 9, statuses
    refused = after[-1]
    assert f"rate limit of {LIMIT} requests per minute" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
