"""What a shadow costs the champion's answers: one-row p99 with a version aliased ``shadow`` against without.

One run fits the platform's default champion as :mod:`benchmarks.serving` does (the blend of
``build_blend_pipeline``, registered and promoted on an MLflow server and embedded PostgreSQL
of its own) and registers the same fit a second time as the shadow: a version whose every
call costs what the champion's does. One ``price-platform serve`` worker follows the registry
every 0.5 s. The same load as the serving bench (Debian's ``wrk``, 2 threads, 32 connections,
one-row bodies that never repeat) runs in :data:`ROUNDS` pairs of rounds with and without the
alias, in alternating order (off-on, on-off, ...) on the same server, so that the host's drift
falls on both sides alike; between rounds the alias is moved and ``/model-info`` confirms the
server followed, and the prediction log's backlog is written.

``shadow_p99_overhead`` is the median p99 of the rounds with the shadow over the median p99
of those without (goal <= 1.05). With the shadow on, every answered record is also scored by
the shadow in the off-path scorer's thread and written to ``monitoring.rollout_predictions``;
``shadow_scored_share`` is the share of those records whose score was written (the rest were
dropped by the bounded queue, counted in ``offpath_scores_dropped_total``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import serving
from benchmarks.results import Result

#: Pairs of rounds (one with the shadow, one without).
ROUNDS = 3
COMMAND = "OMP_NUM_THREADS=1 python -m benchmarks serving_shadow"
MODEL_NAME = "bench-shadow-model"


def run() -> list[Result]:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as folder:
        return _run(Path(folder))


def _run(folder: Path) -> list[Result]:
    from sqlalchemy.engine import make_url

    from price_platform.datasets import load_dataset
    from price_platform.postgres import EmbeddedPostgres, PostgresServer
    from price_platform.registry.promotion import Verdict, promote
    from price_platform.settings import DEFAULT_DATASET, Settings
    from price_platform.training.candidate import fit_candidate, register
    from price_platform.warehouse import migrate
    from serving.auth import create_key

    spec = load_dataset(DEFAULT_DATASET)
    settings = Settings()
    data = serving.training_split(spec, settings)
    trained = fit_candidate(spec, data, {}, coverage=settings.interval_coverage, seed=settings.seed, threads=1,
                            parallel_trees=settings.parallel_trees)
    database = EmbeddedPostgres(folder / "pg", serving.free_port())
    database.start()
    try:
        server = PostgresServer(server_url=make_url(database.url), database_name="bench")
        server.ensure_databases()
        migrate(server.dsn())
        env = {**os.environ, "PATH": f"{serving.BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        mlflow_port = serving.free_port()
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        mlflow_command = [str(serving.BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                          "--backend-store-uri", server.url("mlflow"), "--artifacts-destination",
                          str(folder / "artifacts"), "--workers", "1"]
        with serving.started(mlflow_command, env, f"{tracking_uri}/health", folder / "mlflow.log"):
            champion, shadow = (
                register(trained, spec, data, tracking_uri=tracking_uri, model_name=MODEL_NAME, dsn=server.dsn(),
                         dbt_manifest_hash="none").version
                for _ in range(2)
            )
            promote(tracking_uri, MODEL_NAME, champion, dsn=server.dsn(), actor="bench",
                    check=lambda _: Verdict(True, "benchmark"))
            _, key = create_key(server.dsn(), "predict", "benchmark")
            serve_env = {
                **env, "PRICE_PLATFORM_HOME": str(folder), "PRICE_PLATFORM_DATABASE_URL": database.url,
                "PRICE_PLATFORM_DATABASE_NAME": "bench", "PRICE_PLATFORM_MLFLOW_TRACKING_URI": tracking_uri,
                "PRICE_PLATFORM_MODEL_NAME": MODEL_NAME, "PRICE_PLATFORM_RATE_LIMIT_PER_MINUTE": "100000000",
                "PRICE_PLATFORM_MODEL_POLL_SECONDS": "0.5", "MLFLOW_TRACKING_URI": tracking_uri,
            }
            redis_url = serving.shared_redis()
            if redis_url:
                serve_env["PRICE_PLATFORM_REDIS_URL"] = redis_url
                serving.forget_cached_prices(redis_url, MODEL_NAME)
            print(f"champion version {champion}, shadow version {shadow} (the same fit registered again)", flush=True)
            return _measure(folder, serve_env, key, spec, data.holdout, tracking_uri, str(shadow))
    finally:
        database.stop()


def _measure(folder: Path, env: dict[str, str], key: str, spec: Any, holdout: Any, tracking_uri: str,
             shadow: str) -> list[Result]:
    from price_platform.registry import tracking
    from price_platform.rollout import SHADOW

    mlflow_client = tracking.client(tracking_uri)
    record = serving.request_records(spec, holdout)[0]
    template = json.dumps({**record, "lot_area": 123456789}).replace("123456789", "%d")
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    port = serving.free_port()
    url = f"http://127.0.0.1:{port}"
    api = [str(serving.BIN / "price-platform"), "serve", "--workers", "1", "--port", str(port)]
    p99: dict[bool, list[float]] = {True: [], False: []}
    answered = 0
    with serving.started(api, env, f"{url}/ready", folder / "api.log"):
        written_before = serving.api_metric(port, "offpath_scores_written_total") or 0.0
        for index in range(2 * ROUNDS):
            with_shadow = (index % 4) in (1, 2)  # off, on, on, off, off, on: each side as often first as second
            if with_shadow:
                mlflow_client.set_registered_model_alias(MODEL_NAME, SHADOW, shadow)
            elif index:
                mlflow_client.delete_registered_model_alias(MODEL_NAME, SHADOW)
            _wait_shadow(url, shadow if with_shadow else None, key)
            serving.wait_for_the_log(port)
            time.sleep(2.0)  # the off-path scorer's backlog of the round before is written
            before = _sample_sum(port, "predictions_total")
            rps, _, round_p99 = serving.wrk(url, "/predict", template, headers, folder)
            p99[with_shadow].append(round_p99)
            if with_shadow:
                answered += _sample_sum(port, "predictions_total") - before
            print(f"round {index + 1}: shadow {'on ' if with_shadow else 'off'} {rps:.0f} req/s,"
                  f" p99 {round_p99 * 1e3:.2f} ms", flush=True)
        time.sleep(3.0)
        written = (serving.api_metric(port, "offpath_scores_written_total") or 0.0) - written_before
    on, off = float(np.median(p99[True])), float(np.median(p99[False]))
    overhead = on / off
    scored = written / answered if answered else float("nan")
    print(f"p99 with a shadow {on * 1e3:.2f} ms, without {off * 1e3:.2f} ms: {overhead:.3f}x;"
          f" shadow scores written for {scored:.1%} of the {answered:.0f} records answered with it on", flush=True)
    return [
        Result("shadow_p99_overhead", overhead, "ratio", "<= 1.05", overhead <= 1.05, COMMAND),
        Result("shadow_scored_share", scored, "share", "scores written / answered, informative", True, COMMAND),
    ]


def _sample_sum(port: int, name: str) -> float:
    """The sum of every sample of ``name`` on the API's ``/metrics`` (all its label values)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "))


def _wait_shadow(url: str, version: str | None, key: str, timeout: float = 300.0) -> None:
    """Wait until the server's ``/model-info`` shows ``version`` as its shadow."""
    deadline = time.monotonic() + timeout
    while True:
        info = httpx.get(f"{url}/model-info", headers={"X-API-Key": key}, timeout=10).json()
        if info["rollout"]["shadow_version"] == version:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the API never showed shadow {version}: {info['rollout']}")
        time.sleep(0.3)
