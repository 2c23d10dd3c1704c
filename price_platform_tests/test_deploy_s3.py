"""MLflow's artifact store on S3, as in docker-compose (MinIO), against moto's S3 server on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import mlflow
import pytest
from conftest import free_port, wait_for_port
from mlflow.tracking import MlflowClient

BUCKET = "mlflow"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _start(command: list[str], port: int, log: Path, env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        wait_for_port(port, timeout=180, process=process)
    except BaseException:
        _stop(process)
        raise
    return process


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and the workers it started (its own process group)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3-compatible server in its own process, with the artifact bucket made."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    process = _start([str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, log, {**os.environ, **CREDENTIALS})
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=BUCKET)
    yield endpoint
    _stop(process)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@pytest.fixture(scope="module")
def tracking_server(s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow server proxying artifacts to ``s3://mlflow/artifacts`` (the compose file's command line)."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ, **CREDENTIALS,
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = tmp_path_factory.mktemp("mlflow-log") / "mlflow.log"
    command = [
        str(bin_dir / "mlflow"), "server", "--host=127.0.0.1", f"--port={port}",
        "--artifacts-destination=s3://mlflow/artifacts", "--workers=1",
    ]
    process = _start(command, port, log, env)
    yield f"http://127.0.0.1:{port}"
    _stop(process)


def _objects(endpoint: str, prefix: str = "") -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read() for item in listing}


def test_artifacts_logged_through_the_tracking_server_land_in_s3(tracking_server, s3, tmp_path):
    report = tmp_path / "report.txt"
    report.write_text("holdout rmsle 0.123\n")
    client = MlflowClient(tracking_uri=tracking_server)
    experiment = client.create_experiment("s3-proxied")
    run = client.create_run(experiment)
    client.log_artifact(run.info.run_id, str(report), artifact_path="evaluation")
    client.set_terminated(run.info.run_id)
    stored = _objects(s3, "artifacts/")
    (key,) = [key for key in stored if key.endswith("evaluation/report.txt")]
    assert run.info.run_id in key and stored[key] == b"holdout rmsle 0.123\n"
    downloaded = client.download_artifacts(run.info.run_id, "evaluation/report.txt", str(tmp_path / "back"))
    assert Path(downloaded).read_text() == "holdout rmsle 0.123\n"


def test_an_artifact_logged_to_an_s3_artifact_location_reads_back(tracking_server, s3, tmp_path, monkeypatch):
    """Direct S3 access from the client (an experiment whose artifact location is ``s3://``)."""
    for name, value in {**CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3}.items():
        monkeypatch.setenv(name, value)
    mlflow.set_tracking_uri(tracking_server)
    experiment = mlflow.create_experiment("s3-direct", artifact_location=f"s3://{BUCKET}/direct")
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 4)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifact(str(tmp_path / "weights.bin"), artifact_path="model")
    assert run.info.artifact_uri.startswith(f"s3://{BUCKET}/direct/")
    stored = _objects(s3, "direct/")
    (key,) = [key for key in stored if key.endswith("model/weights.bin")]
    assert stored[key] == bytes(range(256)) * 4
    back = mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/model/weights.bin", dst_path=str(tmp_path / "b"))
    assert Path(back).read_bytes() == bytes(range(256)) * 4


def test_a_missing_bucket_is_reported_not_swallowed(tracking_server, s3, tmp_path, monkeypatch):
    for name, value in {**CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3}.items():
        monkeypatch.setenv(name, value)
    mlflow.set_tracking_uri(tracking_server)
    experiment = mlflow.create_experiment("s3-no-bucket", artifact_location="s3://no-such-bucket/x")
    (tmp_path / "a.txt").write_text("a")
    with mlflow.start_run(experiment_id=experiment), pytest.raises(Exception, match="NoSuchBucket|does not exist"):
        mlflow.log_artifact(str(tmp_path / "a.txt"))
