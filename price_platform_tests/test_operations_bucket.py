"""Backups of MLflow's artifact bucket (MinIO in docker-compose), against moto's S3 server on loopback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import boto3
import pytest
from conftest import drop_databases, free_port
from moto.server import ThreadedMotoServer
from sqlalchemy.engine import make_url

from price_platform.cli import main
from price_platform.operations.backup import BUCKET_ARCHIVE, MANIFEST, BackupError, BackupManifest, backup
from price_platform.operations.bucket import Bucket
from price_platform.operations.restore import restore, user_relations
from price_platform.postgres import DATABASES, PostgresServer
from price_platform.settings import get_settings
from price_platform.warehouse import migrate

OBJECTS = {
    "1/models/m-abc/artifacts/MLmodel": b"flavors: {}\n",
    "1/models/m-abc/artifacts/data/serving/booster-0.ubj": b"{\x00booster\xff",
    "1/run-1/artifacts/plots/residuals.png": b"\x89PNG fake",
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a free loopback port (credentials are moto's test ones)."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)


def _bucket(s3: str, objects: dict[str, bytes] | None = None) -> Bucket:
    name = f"mlflow-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3)
    client.create_bucket(Bucket=name)
    for key, body in (objects or {}).items():
        client.put_object(Bucket=name, Key=f"artifacts/{key}", Body=body)
    client.put_object(Bucket=name, Key="elsewhere/not-ours", Body=b"outside the prefix")
    return Bucket.from_uri(f"s3://{name}/artifacts", s3)


def _objects(bucket: Bucket) -> dict[str, bytes]:
    client = bucket.client()
    return {key: client.get_object(Bucket=bucket.name, Key=f"{bucket.prefix}/{key}")["Body"].read() for key in bucket.keys()}


@pytest.fixture
def databases(system_postgres_url: str) -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A migrated source platform and an empty target (throwaway databases)."""
    made = [PostgresServer(server_url=make_url(system_postgres_url), database_name=f"pp_bucket_{uuid.uuid4().hex[:8]}")
            for _ in range(2)]
    made[0].ensure_databases()
    migrate(made[0].dsn())
    yield made[0], made[1]
    for server in made:
        drop_databases(server)


def test_the_bucket_is_backed_up_listed_in_the_manifest_and_restored(s3, databases, tmp_path) -> None:
    source, target = databases
    bucket = _bucket(s3, OBJECTS)
    folder = backup(source, tmp_path / "no-local-artifacts", tmp_path / "backups", bucket=bucket)
    manifest = BackupManifest.read(folder)
    assert manifest.bucket_uri == bucket.uri
    assert set(manifest.bucket_objects) == set(OBJECTS)  # only the prefix's objects
    assert manifest.bucket_objects["1/models/m-abc/artifacts/MLmodel"]["bytes"] == len(OBJECTS["1/models/m-abc/artifacts/MLmodel"])
    assert BUCKET_ARCHIVE in manifest.files and not (folder / ".bucket").exists()

    empty = _bucket(s3)
    restore(target, folder, tmp_path / "restored", bucket=empty)
    assert _objects(empty) == OBJECTS
    assert user_relations(target, "platform") > 0


def test_restore_refuses_a_bucket_that_holds_objects_before_touching_the_databases(s3, databases, tmp_path) -> None:
    source, target = databases
    folder = backup(source, tmp_path / "none", tmp_path / "backups", bucket=_bucket(s3, OBJECTS))
    busy = _bucket(s3, {"1/other": b"live data"})
    with pytest.raises(BackupError, match=f"needs an empty artifact bucket; {busy.uri} holds objects"):
        restore(target, folder, tmp_path / "restored", bucket=busy)
    target.ensure_databases()
    assert all(user_relations(target, name) == 0 for name in DATABASES)
    assert _objects(busy) == {"1/other": b"live data"}


def test_restore_refuses_bucket_objects_with_nowhere_to_go(s3, databases, tmp_path) -> None:
    source, target = databases
    folder = backup(source, tmp_path / "none", tmp_path / "backups", bucket=_bucket(s3, OBJECTS))
    with pytest.raises(BackupError, match="holds 3 objects of s3://.*set PRICE_PLATFORM_ARTIFACT_BUCKET_URI"):
        restore(target, folder, tmp_path / "restored")


def test_an_object_that_does_not_match_the_manifest_undoes_the_restore(s3, databases, tmp_path) -> None:
    source, target = databases
    folder = backup(source, tmp_path / "none", tmp_path / "backups", bucket=_bucket(s3, OBJECTS))
    listing = json.loads((folder / MANIFEST).read_text())
    listing["bucket_objects"]["1/run-1/artifacts/plots/residuals.png"]["sha256"] = "0" * 64
    (folder / MANIFEST).write_text(json.dumps(listing))
    empty = _bucket(s3)
    with pytest.raises(BackupError, match="residuals.png of the backup is missing or does not match its checksum"):
        restore(target, folder, tmp_path / "restored", bucket=empty)
    assert all(user_relations(target, name) == 0 for name in DATABASES)  # restored databases emptied again
    assert empty.keys() == []


def test_the_backup_command_copies_the_bucket_of_the_settings(s3, databases, tmp_path, monkeypatch, capsys) -> None:
    source, _ = databases
    bucket = _bucket(s3, OBJECTS)
    monkeypatch.setenv("PRICE_PLATFORM_DATABASE_URL", source.server_url.render_as_string(hide_password=False))
    monkeypatch.setenv("PRICE_PLATFORM_DATABASE_NAME", source.database_name)
    monkeypatch.setenv("PRICE_PLATFORM_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("PRICE_PLATFORM_ARTIFACT_ROOT", str(tmp_path / "none"))
    monkeypatch.setenv("PRICE_PLATFORM_ARTIFACT_BUCKET_URI", bucket.uri)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3)
    get_settings.cache_clear()
    try:
        assert main(["backup"]) == 0
    finally:
        get_settings.cache_clear()
    (folder,) = list((tmp_path / "backups").iterdir())
    assert f"3 objects of {bucket.uri}" in capsys.readouterr().out
    assert set(BackupManifest.read(folder).bucket_objects) == set(OBJECTS)
    BackupManifest.read(folder).verify(folder)
