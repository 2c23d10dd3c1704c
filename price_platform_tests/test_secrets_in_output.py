"""No password in any log, MLflow tag or HTTP answer, with a PostgreSQL URL and a Redis URL that hold one.

The real components run with both URLs: the platform's migrations, an MLflow tracking server whose
backend store URL holds the PostgreSQL password, registration and promotion of a model (MLflow run
and version tags), the Redis announcement of the champion, ``price-platform serve`` (its whole log,
every answer and header of the API's routes, with good, bad and unauthorised requests, and after
Redis went away mid-run), the ``price-platform rollback`` and ``backup`` commands' output and
backup files, and a Dagster run of the daily backup asset (its event log, run storage and compute
logs). Not covered here: the Dagster daemon and UI processes of ``make demo`` (they read the same
settings).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy.engine import make_url

from conftest import drop_databases, free_port, wait_for_port, which
from price_platform.datasets import load_dataset
from price_platform.modeling import build_ridge_baseline, read_sample
from price_platform.postgres import PostgresServer
from price_platform.registry import tracking
from price_platform.registry.announce import announce_champion
from price_platform.registry.promotion import Verdict, promote
from price_platform.registry.versions import register_candidate
from price_platform.settings import Settings
from price_platform.warehouse import migrate
from serving.auth import create_key
from test_operations_champion import MlflowServer
from test_serving_support import Server, records, server_env

PG_PASSWORD = f"pg-pw-{uuid.uuid4().hex}"
REDIS_PASSWORD = f"redis-pw-{uuid.uuid4().hex}"


@pytest.fixture
def redis_with_password(tmp_path: Path):
    """A Redis server of this test that requires :data:`REDIS_PASSWORD` (its own port and folder)."""
    port = free_port()
    log = tmp_path / "redis.log"
    process = subprocess.Popen(
        [which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD,
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path), "--logfile", str(log)],
    )
    wait_for_port(port, timeout=30, process=process)
    yield process, f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0", log
    if process.poll() is None:
        process.terminate()
        process.wait(10)


def _leaks(text: str) -> list[str]:
    return [name for name, secret in (("PostgreSQL", PG_PASSWORD), ("Redis", REDIS_PASSWORD)) if secret in text]


def test_no_password_in_logs_tags_or_answers(system_postgres_url, redis_with_password, tmp_path: Path) -> None:
    redis_process, redis_url, redis_log = redis_with_password
    server_url = make_url(system_postgres_url).set(password=PG_PASSWORD)  # the test server trusts loopback
    name = f"pp_secret_{uuid.uuid4().hex[:8]}"
    settings = Settings(
        home=tmp_path / "home", database_url=server_url.render_as_string(hide_password=False), database_name=name,
        redis_url=redis_url, model_name=f"secret-{uuid.uuid4().hex[:6]}", auth_enabled=True, model_poll_seconds=2.0,
    )
    database = PostgresServer(server_url=server_url, database_name=name)
    database.ensure_databases()
    outputs: dict[str, str] = {}
    mlflow = api = None
    try:
        dsn = database.dsn()
        assert _leaks(dsn + redis_url) == ["PostgreSQL", "Redis"]  # the passwords really are in what the components get
        migrate(dsn)
        (tmp_path / "artifacts").mkdir()
        mlflow = MlflowServer(database.url("mlflow"), tmp_path / "artifacts", tmp_path / "mlflow.log")
        settings = settings.model_copy(update={"mlflow_tracking_uri": mlflow.url})
        spec = load_dataset(settings.dataset)
        frame = read_sample(spec).head(400)
        pipeline = build_ridge_baseline(spec).fit(frame[spec.features], frame[spec.target])
        version = register_candidate(
            mlflow.url, settings.model_name, pipeline, frame[spec.features], dsn=dsn,
            interval_log_halfwidth=0.2, data_version="secrets", metrics={"holdout_rmsle": 0.1},
        ).version
        promote(mlflow.url, settings.model_name, version, dsn=dsn, actor="test", check=lambda _: Verdict(True, "test"))
        with redis.Redis.from_url(redis_url) as authenticated, redis.Redis.from_url(redis_url.replace(f":{REDIS_PASSWORD}@", "")) as anonymous:
            assert authenticated.ping()
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
        announce_champion(redis_url, settings.model_name, version)
        _, predict_key = create_key(dsn, "predict", "secrets test")
        _, admin_key = create_key(dsn, "admin", "secrets test")

        env = server_env(settings)
        api = Server(env, log_path=tmp_path / "api.log")
        api.wait_ready()
        record = records(spec, frame.head(1))[0]
        predict, admin = {"X-API-Key": predict_key}, {"X-API-Key": admin_key}
        calls = [
            ("post", "/predict", {"json": record, "headers": predict}),
            ("post", "/predict", {"json": {**record, "nonsense": 1}, "headers": predict}),
            ("post", "/predict", {"json": record, "headers": {"X-API-Key": "ppk_wrong_key"}}),
            ("post", "/feedback", {"json": {"prediction_id": str(uuid.uuid4()), "actual": 1.0}, "headers": predict}),
            ("get", "/model-info", {"headers": predict}),
            ("get", "/ready", {}),
            ("get", "/health", {}),
            ("get", "/metrics", {}),
            ("get", "/schema/openapi.json", {}),
            ("post", "/admin/reload", {"json": {"reason": "secrets test"}, "headers": admin}),
            ("post", "/admin/rollback", {"json": {"reason": "secrets test"}, "headers": admin}),
        ]

        def call_all(label: str) -> None:
            for method, path, options in calls:
                answer = httpx.request(method, f"{api.url}{path}", timeout=30, **options)
                outputs[f"{label} {method} {path} -> {answer.status_code}"] = (
                    answer.text + "\n" + "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
                )

        call_all("with redis")
        redis_process.terminate()  # errors are where URLs leak: Redis goes away mid-run
        redis_process.wait(10)
        time.sleep(1.0)
        call_all("redis down")
        assert any(status.endswith("-> 200") for status in outputs if "/predict" in status)

        rollback = subprocess.run(
            [str(Path(sys.executable).parent / "price-platform"), "rollback", "--actor", "test"],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert rollback.returncode == 1 and "nothing to roll back" in rollback.stderr
        outputs["price-platform rollback"] = rollback.stdout + rollback.stderr
        backup = subprocess.run(
            [str(Path(sys.executable).parent / "price-platform"), "backup", "--out", str(tmp_path / "backups")],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert backup.returncode == 0, backup.stderr
        outputs["price-platform backup"] = backup.stdout + backup.stderr

        # A Dagster run with the same URLs (the daily backup asset): its event log and compute logs.
        import dagster as dg

        from price_platform.defs.operations.assets import platform_backup
        from price_platform.defs.operations.resources import Backups
        from price_platform.resources import Warehouse

        (tmp_path / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
            result = dg.materialize(
                [platform_backup], instance=instance,
                resources={
                    "warehouse": Warehouse(database_url=settings.database_url, database_name=name),
                    "backups": Backups(backup_dir=str(tmp_path / "dagster-backups"), artifact_dir=str(tmp_path / "none")),
                },
            )
            assert result.success
            outputs["dagster event log"] = "\n".join(repr(event) for event in instance.all_logs(result.run_id))

        client = tracking.client(mlflow.url)
        for experiment in client.search_experiments():
            for run in client.search_runs([experiment.experiment_id]):
                outputs[f"mlflow run {run.info.run_id}"] = repr(run.data.tags) + repr(run.data.params)
        for found in client.search_model_versions(f"name = '{settings.model_name}'"):
            outputs[f"mlflow version {found.version}"] = repr(found.tags) + found.source
        outputs["mlflow registered model"] = repr(client.get_registered_model(settings.model_name).tags)
    finally:
        if api is not None:
            api.stop()
        if mlflow is not None:
            mlflow.stop()
        drop_databases(database)

    for path in sorted(tmp_path.rglob("*")):  # every log and every stored MLflow artifact
        if path.is_file():
            outputs[f"file {path.relative_to(tmp_path)}"] = path.read_bytes().decode("utf-8", errors="replace")
    assert {"file api.log", "file mlflow.log", f"file {redis_log.name}"} <= set(outputs)
    assert any(label.startswith("file dagster/") for label in outputs)  # the run's storage and compute logs
    assert any(label.startswith("mlflow run ") for label in outputs)
    leaked = {label: _leaks(text) for label, text in outputs.items() if _leaks(text)}
    assert leaked == {}, f"passwords found in: {leaked}"
