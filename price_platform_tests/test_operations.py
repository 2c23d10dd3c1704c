"""Backups and restores: pg_dump/pg_restore of every platform database plus the artifact folder."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from conftest import drop_databases
from sqlalchemy.engine import make_url

from price_platform.bulk_load import bulk_load
from price_platform.cli import main
from price_platform.datasets import load_dataset
from price_platform.modeling import read_sample
from price_platform.operations.backup import MANIFEST, BackupError, BackupManifest, backup, prune
from price_platform.operations.restore import restore, user_relations
from price_platform.postgres import DATABASES, PostgresServer
from price_platform.settings import DEFAULT_DATASET, Settings, get_settings
from price_platform.synth import SynthOptions, write
from price_platform.warehouse import migrate


def fingerprint(server: PostgresServer) -> dict[str, tuple[int, str]]:
    """table -> (rows, md5 of all rows in a fixed order) over every platform database."""
    result = {}
    for database in DATABASES:
        with psycopg2.connect(server.dsn(database)) as connection, connection.cursor() as cursor:
            cursor.execute(
                "select schemaname, tablename from pg_tables where schemaname not in ('pg_catalog', 'information_schema')"
            )
            for schema, table in cursor.fetchall():
                cursor.execute(
                    f'select count(*), md5(coalesce(string_agg(t::text, \'|\' order by t::text), \'\')) from "{schema}"."{table}" t'
                )
                result[f"{database}:{schema}.{table}"] = cursor.fetchone()
    return result


@pytest.fixture(scope="module")
def platform(system_postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, Path, Path]]:
    """A throwaway source platform (some sales bulk-loaded, a deployment row, an artifact file) and its backup."""
    tmp_path = tmp_path_factory.mktemp("ops")
    source = PostgresServer(server_url=make_url(system_postgres_url), database_name=f"pp_ops_{uuid.uuid4().hex[:8]}")
    source.ensure_databases()
    migrate(source.dsn())
    spec = load_dataset(DEFAULT_DATASET)
    files = write(spec, read_sample(spec), SynthOptions(rows=400, seed=3), tmp_path / "landing")
    bulk_load(source.dsn(), spec, files[:5], show_progress=False)
    with psycopg2.connect(source.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute(
            "insert into model_registry.deployments (model_name, to_version, action, reason, actor)"
            " values ('price-model', '1', 'promote', 'first model', 'test')"
        )
    with psycopg2.connect(source.dsn("optuna")) as connection, connection.cursor() as cursor:
        cursor.execute("create table studies (id serial primary key, name text); insert into studies (name) values ('s1')")
    artifacts = tmp_path / "mlartifacts"
    (artifacts / "1" / "abc" / "artifacts").mkdir(parents=True)
    (artifacts / "1" / "abc" / "artifacts" / "model.pkl").write_bytes(b"\x00model-bytes\xff")
    folder = backup(source, artifacts, tmp_path / "backups")
    yield source, artifacts, folder
    drop_databases(source)


@pytest.fixture
def target(system_postgres_url: str) -> Iterator[PostgresServer]:
    """Empty throwaway platform databases to restore into."""
    server = PostgresServer(server_url=make_url(system_postgres_url), database_name=f"pp_ops_{uuid.uuid4().hex[:8]}")
    yield server
    drop_databases(server)


@pytest.fixture
def copied(platform, tmp_path) -> Path:
    """A copy of the module's backup that a test may damage."""
    return Path(shutil.copytree(platform[2], tmp_path / "backup"))


def test_backup_then_restore_into_empty_databases_gives_the_same_tables_and_files(platform, target, tmp_path):
    source, artifacts, folder = platform
    manifest = BackupManifest.read(folder)
    assert set(manifest.databases) == set(DATABASES)
    assert set(manifest.files) == {*(f"{name}.dump" for name in DATABASES), "artifacts.tar.gz"}
    restored_artifacts = tmp_path / "restored" / "mlartifacts"
    restore(target, folder, restored_artifacts)
    before, after = fingerprint(source), fingerprint(target)
    assert after["platform:price_data.raw_sales"][0] > 0 and after["platform:model_registry.deployments"][0] == 1
    assert before == after
    assert (restored_artifacts / "1" / "abc" / "artifacts" / "model.pkl").read_bytes() == b"\x00model-bytes\xff"


def test_restore_refuses_a_database_that_holds_tables_and_changes_nothing(platform, tmp_path):
    source, artifacts, folder = platform
    before = fingerprint(source)
    with pytest.raises(BackupError, match=rf"restore needs empty databases; .*'{source.database_name}'"):
        restore(source, folder, tmp_path / "fresh-artifacts")
    assert fingerprint(source) == before
    assert not (tmp_path / "fresh-artifacts").exists()


def test_restore_refuses_an_artifact_folder_with_files(platform, target):
    source, artifacts, folder = platform
    with pytest.raises(BackupError, match="restore needs an empty artifact folder"):
        restore(target, folder, artifacts)
    assert all(user_relations(target, name) == 0 for name in DATABASES)


def test_restore_refuses_a_damaged_backup_before_touching_anything(copied, target, tmp_path):
    folder = copied
    dump = folder / "platform.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="platform.dump does not match its checksum"):
        restore(target, folder, tmp_path / "restored")
    (folder / "optuna.dump").unlink()
    with pytest.raises(BackupError, match="is missing"):
        restore(target, folder, tmp_path / "restored")
    (folder / MANIFEST).unlink()
    with pytest.raises(BackupError, match="not a backup"):
        restore(target, folder, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_a_restore_that_fails_half_way_leaves_the_targets_empty(copied, target, tmp_path):
    folder = copied
    # a dump that is not a dump, with a matching checksum: pg_restore fails on the third database
    manifest = BackupManifest.read(folder)
    broken = folder / manifest.databases["mlflow"]
    broken.write_bytes(b"PGDMP not really")
    from price_platform.operations.backup import sha256

    manifest.files[broken.name] = {"bytes": broken.stat().st_size, "sha256": sha256(broken)}
    manifest.write(folder)
    with pytest.raises(BackupError, match="pg_restore could not read mlflow.dump"):
        restore(target, folder, tmp_path / "restored")
    assert all(user_relations(target, name) == 0 for name in DATABASES)
    assert not (tmp_path / "restored").exists()


def test_prune_keeps_the_newest_complete_backups(platform, tmp_path):
    source, artifacts, _ = platform
    folders = [backup(source, artifacts, tmp_path / "backups") for _ in range(3)]
    (tmp_path / "backups" / ".20990101T000000Z.partial").mkdir()  # an unfinished one is never counted
    removed = prune(tmp_path / "backups", keep=2)
    assert removed == folders[:1]
    assert sorted(p for p in (tmp_path / "backups").iterdir() if not p.name.startswith(".")) == folders[1:]


def test_backup_and_restore_commands(platform, target, tmp_path, monkeypatch, capsys):
    source, artifacts, _ = platform
    url = source.server_url.render_as_string(hide_password=False)
    monkeypatch.setenv("PRICE_PLATFORM_DATABASE_URL", url)
    monkeypatch.setenv("PRICE_PLATFORM_DATABASE_NAME", source.database_name)
    monkeypatch.setenv("PRICE_PLATFORM_ARTIFACT_ROOT", str(artifacts))
    monkeypatch.setenv("PRICE_PLATFORM_BACKUP_DIR", str(tmp_path / "backups"))
    get_settings.cache_clear()
    try:
        assert main(["backup", "--keep", "1"]) == 0
        (folder,) = [p for p in (tmp_path / "backups").iterdir()]
        monkeypatch.setenv("PRICE_PLATFORM_DATABASE_NAME", target.database_name)
        monkeypatch.setenv("PRICE_PLATFORM_ARTIFACT_ROOT", str(tmp_path / "restored"))
        get_settings.cache_clear()
        assert main(["restore", str(folder)]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert f"backup written to {folder}" in out and f"into database {target.database_name}" in out
    assert fingerprint(source) == fingerprint(target)
    assert json.loads((folder / MANIFEST).read_text())["database_name"] == source.database_name
    assert Settings().backup_cron == "0 2 * * *"


def test_the_daily_backup_runs_in_dagster_and_prunes_old_backups(platform, tmp_path):
    import dagster as dg

    from price_platform.defs.operations.assets import platform_backup
    from price_platform.defs.operations.resources import Backups
    from price_platform.defs.resources import Warehouse

    source, artifacts, _ = platform
    backups = Backups(backup_dir=str(tmp_path / "backups"), artifact_dir=str(artifacts), keep=1)
    warehouse = Warehouse(
        database_url=source.server_url.render_as_string(hide_password=False), database_name=source.database_name
    )
    for _ in range(2):
        result = dg.materialize([platform_backup], resources={"warehouse": warehouse, "backups": backups})
        assert result.success
    (materialization,) = result.asset_materializations_for_node("platform_backup")
    folder = Path(materialization.metadata["path"].value)
    assert [p for p in (tmp_path / "backups").iterdir()] == [folder]
    assert materialization.metadata["removed_backups"].value == 1
    BackupManifest.read(folder).verify(folder)


def test_the_platform_definitions_hold_the_daily_backup_schedule(settings):
    from price_platform.definitions import build_definitions

    defs = build_definitions(settings.model_copy(update={"backup_cron": "15 1 * * *"}))
    schedule = defs.resolve_schedule_def("daily_backup")
    assert schedule.cron_schedule == "15 1 * * *"
    assert schedule.job_name == "backup"
