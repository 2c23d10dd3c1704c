"""``price-platform restore BACKUP``: a backup back into empty databases and an empty artifact folder.

Restoring over live data is refused: every target database must be empty (missing ones are
created), the artifact folder must be empty, and so must the artifact bucket when the backup
holds bucket objects (each is checked against its SHA-256 in the manifest before upload). The backup's checksums are verified first.
Each database is restored in one transaction (``pg_restore`` to SQL, ``psql
--single-transaction``), and if any step fails the databases restored so far are emptied
again, so a failed restore leaves the targets as it found them. Settings that apply only to
newer servers (``transaction_timeout``, PostgreSQL 17+) are dropped for older ones.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import psycopg2
from psycopg2 import sql

from price_platform.operations.backup import (
    ARTIFACTS,
    BUCKET_ARCHIVE,
    BackupError,
    BackupManifest,
    client,
    client_command,
)
from price_platform.operations.bucket import Bucket, BucketError
from price_platform.postgres import DATABASES, PostgresServer, ensure_server
from price_platform.settings import get_settings

#: Statement prefixes a server older than the key (major version) does not know.
NEWER_SETTINGS = {17: b"SET transaction_timeout"}


def user_relations(server: PostgresServer, database: str) -> int:
    """Number of tables, views and sequences outside the system schemas."""
    with psycopg2.connect(server.dsn(database)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%%'"
            " and c.relkind in ('r', 'p', 'v', 'm', 'S')"
        )
        return int(cursor.fetchone()[0])


def server_major(server: PostgresServer) -> int:
    with psycopg2.connect(server.dsn()) as connection:
        return connection.server_version // 10000


def restore_database(server: PostgresServer, database: str, dump: Path) -> None:
    """One dump into one (empty) database, in a single transaction."""
    args, env = client_command(server, database)
    skipped = [prefix for version, prefix in NEWER_SETTINGS.items() if server_major(server) < version]
    script = subprocess.Popen(
        [client("pg_restore"), "--no-owner", "--no-privileges", "--file", "-", str(dump)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    apply = subprocess.Popen(
        [client("psql"), *args, "--quiet", "--no-psqlrc", "--single-transaction", "-v", "ON_ERROR_STOP=1", "--file", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    assert script.stdout is not None and apply.stdin is not None
    try:
        for line in script.stdout:
            if not any(line.startswith(prefix) for prefix in skipped):
                apply.stdin.write(line)
    except BrokenPipeError:
        pass  # psql stopped at an error; reported below
    finally:
        apply.stdin.close()
    script_error = script.stderr.read().decode() if script.stderr else ""
    apply_error = apply.stderr.read().decode() if apply.stderr else ""
    if script.wait() != 0:
        raise BackupError(f"pg_restore could not read {dump.name}: {script_error.strip()[-2000:]}")
    if apply.wait() != 0:
        raise BackupError(f"restoring {dump.name} into {server.database_name}{DATABASES[database]} failed: {apply_error.strip()[-2000:]}")


def empty_database(server: PostgresServer, database: str) -> None:
    """Drop and recreate one of the platform's databases (used to undo a failed restore)."""
    name = server.database_name + DATABASES[database]
    admin = psycopg2.connect(server.server_url.set(drivername="postgresql").render_as_string(hide_password=False))
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            cursor.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    finally:
        admin.close()


def restore(server: PostgresServer, folder: Path, artifacts: Path, *, bucket: Bucket | None = None) -> BackupManifest:
    """Restore the backup in ``folder`` into ``server``'s (empty) databases, the (empty) ``artifacts`` folder
    and, when the backup holds bucket objects, the (empty) ``bucket``."""
    manifest = BackupManifest.read(folder)
    manifest.verify(folder)
    unknown = set(manifest.databases) - set(DATABASES)
    if unknown:
        raise BackupError(f"{folder}: the backup holds databases this version does not know: {sorted(unknown)}")
    server.ensure_databases()
    busy = {name: count for name in manifest.databases if (count := user_relations(server, name))}
    if busy:
        names = {server.database_name + DATABASES[name]: count for name, count in busy.items()}
        raise BackupError(f"restore needs empty databases; these hold tables (count): {names}")
    if artifacts.exists() and any(artifacts.iterdir()):
        raise BackupError(f"restore needs an empty artifact folder; {artifacts} holds files")
    if manifest.bucket_objects and bucket is None:
        raise BackupError(
            f"the backup holds {len(manifest.bucket_objects)} objects of {manifest.bucket_uri}:"
            " set PRICE_PLATFORM_ARTIFACT_BUCKET_URI to the bucket to restore them into"
        )
    if manifest.bucket_objects and bucket is not None and bucket.keys():
        raise BackupError(f"restore needs an empty artifact bucket; {bucket.uri} holds objects")
    restored: list[str] = []
    try:
        for name, dump in manifest.databases.items():
            restored.append(name)
            restore_database(server, name, folder / dump)
        _unpack_artifacts(folder / ARTIFACTS, artifacts)
        if manifest.bucket_objects and bucket is not None:
            _restore_bucket(folder / BUCKET_ARCHIVE, bucket, manifest.bucket_objects)
    except BaseException:
        for name in restored:
            empty_database(server, name)
        raise
    return manifest


def _unpack_artifacts(archive: Path, artifacts: Path) -> None:
    artifacts.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=artifacts.parent, prefix=".restore-") as scratch:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(scratch, filter="data")
        unpacked = Path(scratch) / "artifacts"
        unpacked.mkdir(exist_ok=True)
        if artifacts.exists():
            artifacts.rmdir()  # checked empty above
        shutil.move(unpacked, artifacts)


def _restore_bucket(archive: Path, bucket: Bucket, objects: dict[str, dict[str, object]]) -> None:
    with tempfile.TemporaryDirectory(prefix="restore-bucket-") as scratch:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(scratch, filter="data")
        try:
            bucket.upload(Path(scratch) / "bucket", objects)
        except BucketError as error:
            raise BackupError(str(error)) from error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup", type=Path, help="backup folder written by `price-platform backup`")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    manifest = restore(ensure_server(settings), args.backup, settings.artifacts,
                       bucket=Bucket.from_settings(settings.artifact_bucket_uri))
    print(
        f"restored backup of {manifest.created_at} ({', '.join(manifest.databases)}) into database "
        f"{settings.database_name} and {settings.artifacts}"
    )
    return 0
