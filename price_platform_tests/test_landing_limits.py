"""Landed files are untrusted: size caps (gzip bombs too), no symbolic links, and parsing in runs, never in the sensor."""

from __future__ import annotations

import builtins
import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg2
import pytest

from price_platform.datasets import bundled_sample, load_dataset
from price_platform.defs.ingestion.assets import RAW_SALES, build_raw_sales
from price_platform.defs.ingestion.checks import build_checks
from price_platform.defs.ingestion.sensors import (
    LOAD_LANDED_FILE,
    SCAN_LANDED_FILE,
    build_landing_sensor,
    build_scan_job,
)
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.sources import FileLimits, read_file
from price_platform.settings import DEFAULT_DATASET, Settings, get_settings

SPEC = load_dataset(DEFAULT_DATASET)
RAW_SALES_ASSET = build_raw_sales(SPEC)
CAP = 1_000_000


@pytest.fixture(scope="module")
def resources(settings: Settings, postgres) -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": Warehouse(database_url=settings.database_url, database_name=settings.database_name),
        "dataset": Dataset(path=str(DEFAULT_DATASET)),
    }


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return pd.read_csv(bundled_sample(), dtype=str, keep_default_na=False)


@pytest.fixture
def capped(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The settings' landing caps set to :data:`CAP` bytes through the environment, as an operator would."""
    monkeypatch.setenv("PRICE_PLATFORM_LANDING_MAX_FILE_BYTES", str(CAP))
    monkeypatch.setenv("PRICE_PLATFORM_LANDING_MAX_DECOMPRESSED_BYTES", str(CAP))
    get_settings.cache_clear()
    yield CAP
    get_settings.cache_clear()


def month(sample: pd.DataFrame, year: int, mo: int, id_offset: int) -> pd.DataFrame:
    rows = sample[(sample["Year_Sold"] == str(year)) & (sample["Mo_Sold"] == str(mo))].copy()
    rows["sale_id"] = (rows["sale_id"].astype(int) + id_offset).astype(str)
    return rows.reset_index(drop=True)


def gzip_bomb(path: Path, header_and_rows: bytes, inflated: int) -> None:
    """A small .csv.gz that inflates to ``inflated`` bytes: a real header and rows, then many members of one line."""
    line = header_and_rows.splitlines(keepends=True)[-1]
    repeated = line * (10_000_000 // len(line))
    path.write_bytes(gzip.compress(header_and_rows) + gzip.compress(repeated) * (inflated // len(repeated)))


def table_counts(resources) -> tuple[int, int]:
    with psycopg2.connect(resources["warehouse"].dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select to_regclass('price_data.raw_sales') is not null")
        if not cursor.fetchone()[0]:
            return (0, 0)
        cursor.execute("select (select count(*) from price_data.raw_sales), (select count(*) from price_data.loads)")
        return cursor.fetchone()


def failed_load(resources, partition_key: str, path: Path) -> str:
    """Materialise a partition from a landed file, which must fail; the failure's description."""
    result = dg.materialize(
        [RAW_SALES_ASSET],
        partition_key=partition_key,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"raw_sales": {"config": {"source_file": str(path)}}}},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.step_failure_data.user_failure_data.description


def test_a_gzip_bomb_is_refused_while_inflating_and_writes_nothing(
    resources, sample, capped: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "july.csv.gz"
    gzip_bomb(path, month(sample, 2008, 7, 700_000).to_csv(index=False).encode(), inflated=100 * capped)
    assert path.stat().st_size < capped  # within the on-disk cap: only inflating it goes past a cap

    inflated: list[int] = []
    real_read = gzip.GzipFile.read

    def counting_read(self: gzip.GzipFile, size: int = -1) -> bytes:
        data = real_read(self, size)
        inflated.append(len(data))
        return data

    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    before = table_counts(resources)
    message = failed_load(resources, "2008-07-01", path)
    assert message == (
        f"{path}: holds more than {capped} bytes once decompressed, over the landing-file cap"
        " (PRICE_PLATFORM_LANDING_MAX_DECOMPRESSED_BYTES); reading stopped there and nothing was loaded"
    )
    assert 0 < sum(inflated) <= capped + 1  # stopped at the cap, not after inflating 100 times that
    assert table_counts(resources) == before


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(resources, capped: int, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"\xff not a csv \xfe" * (capped // 10))  # unreadable: a read would fail differently
    size = path.stat().st_size
    assert size > capped

    landing = tmp_path / "landing"
    landing.mkdir()
    os.link(path, landing / "big.csv")
    tick = build_landing_sensor(SPEC, landing, max_file_bytes=capped)(dg.build_sensor_context())
    assert tick.run_requests == []
    assert tick.skip_reason.skip_message == (
        f"{landing / 'big.csv'}: {size} bytes, over the landing-file cap of {capped} bytes"
        " (PRICE_PLATFORM_LANDING_MAX_FILE_BYTES); not loaded"
    )

    before = table_counts(resources)
    assert failed_load(resources, "2008-07-01", path) == (
        f"{path}: {size} bytes, over the landing-file cap of {capped} bytes"
        " (PRICE_PLATFORM_LANDING_MAX_FILE_BYTES); the file was not read"
    )
    assert table_counts(resources) == before
    with pytest.raises(IngestionError, match="the file was not read"):
        read_file(path, limits=FileLimits(max_file_bytes=capped, max_decompressed_bytes=10 * capped))


def test_a_parquet_file_whose_row_groups_inflate_past_the_cap_is_refused(sample, tmp_path: Path) -> None:
    path = tmp_path / "wide.parquet"
    pd.concat([month(sample, 2008, 7, 0)] * 20).to_parquet(path)
    assert len(read_file(path, limits=FileLimits(10**9, 10**9)).frame) == 20 * len(month(sample, 2008, 7, 0))
    small = path.stat().st_size  # row groups are larger uncompressed than the file is
    with pytest.raises(IngestionError) as raised:
        read_file(path, limits=FileLimits(max_file_bytes=10**9, max_decompressed_bytes=small))
    assert str(raised.value).startswith(f"{path}: holds more than {small} bytes once decompressed")


def test_a_symbolic_link_in_the_landing_folder_is_skipped_with_a_message(sample, tmp_path: Path) -> None:
    elsewhere = tmp_path / "outside.csv"
    month(sample, 2008, 7, 0).to_csv(elsewhere, index=False)
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "july.csv").symlink_to(elsewhere)
    sensor = build_landing_sensor(SPEC, landing)

    first = sensor(dg.build_sensor_context())
    assert first.run_requests == []
    assert first.skip_reason.skip_message == (
        f"{landing / 'july.csv'}: a symbolic link, skipped: landed files are read only as regular files"
    )
    second = sensor(dg.build_sensor_context(cursor=first.cursor))
    assert second.run_requests == [] and second.skip_reason.skip_message == f"no new files in {landing}"
    with pytest.raises(IngestionError, match="a symbolic link; landed files are read only as regular files"):
        read_file(landing / "july.csv")  # a run given the link's path refuses it too


def test_the_sensor_opens_no_file_and_the_scan_run_fails_with_the_parse_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "garbled.csv").write_bytes(b"sale_id,Sale_Price\n1,\xff\xfe\n")
    sensor = build_landing_sensor(SPEC, landing)
    instance = dg.DagsterInstance.ephemeral()

    def refuse(real):
        def guarded(file, *args, **kwargs):
            if str(file).startswith(str(landing)):
                raise AssertionError(f"the sensor opened {file}")
            return real(file, *args, **kwargs)
        return guarded

    with monkeypatch.context() as patched:
        for module, name in ((builtins, "open"), (io, "open"), (os, "open")):
            patched.setattr(module, name, refuse(getattr(module, name)))
        first = sensor(dg.build_sensor_context(instance=instance))
    (request,) = first.run_requests
    assert request.job_name == SCAN_LANDED_FILE

    scan = build_scan_job(SPEC).execute_in_process(
        run_config=request.run_config, instance=instance, tags=request.tags, raise_on_error=False
    )
    assert not scan.success
    expected = (
        f"{landing / 'garbled.csv'}: row 1, column 'Sale_Price': byte 0xff is not valid UTF-8 (line 2);"
        " save the file as UTF-8"
    )
    (failure,) = [e for e in scan.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_failure_data.user_failure_data.description == expected
    second = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert second.run_requests == [] and second.skip_reason.skip_message == expected
    third = sensor(dg.build_sensor_context(instance=instance, cursor=second.cursor))
    assert third.run_requests == [] and third.skip_reason.skip_message == f"no new files in {landing}"


def test_a_scanned_file_is_loaded_by_one_run_per_month(resources, settings: Settings, sample, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    pd.concat([month(sample, 2008, 7, 800_000), month(sample, 2008, 8, 800_000)]).to_csv(
        landing / "summer.csv", index=False
    )
    month(sample, 2008, 9, 800_000).to_parquet(landing / "september.parquet")
    (landing / "notes.txt").write_text("not a sales file")
    sensor = build_landing_sensor(SPEC, landing)
    instance = dg.DagsterInstance.ephemeral()

    first = sensor(dg.build_sensor_context(instance=instance))
    assert {(r.job_name, Path(r.tags["price_platform/source_file"]).name) for r in first.run_requests} == {
        (SCAN_LANDED_FILE, "summer.csv"), (SCAN_LANDED_FILE, "september.parquet"),
    }
    waiting = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert waiting.run_requests == []  # the scans have not run yet
    scan_job = build_scan_job(SPEC)
    for request in first.run_requests:
        assert scan_job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags).success

    second = sensor(dg.build_sensor_context(instance=instance, cursor=waiting.cursor))
    requested = {(r.job_name, r.partition_key, Path(r.run_config["ops"]["raw_sales"]["config"]["source_file"]).name)
                 for r in second.run_requests}
    assert requested == {(LOAD_LANDED_FILE, "2008-07-01", "summer.csv"), (LOAD_LANDED_FILE, "2008-08-01", "summer.csv"),
                         (LOAD_LANDED_FILE, "2008-09-01", "september.parquet")}
    assert len({r.run_key for r in second.run_requests}) == 3
    assert sensor(dg.build_sensor_context(instance=instance, cursor=second.cursor)).run_requests == []

    request = next(r for r in second.run_requests if r.partition_key == "2008-09-01")
    result = dg.materialize(
        [RAW_SALES_ASSET, *build_checks(SPEC, settings.max_rejected_share)],
        partition_key=request.partition_key,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config=request.run_config,
    )
    assert result.success
    assert RAW_SALES in {m.asset_key for m in result.get_asset_materialization_events()}
    with psycopg2.connect(resources["warehouse"].dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select count(*) from price_data.raw_sales where _partition_key = '2008-09-01' and _source_file = %s",
            (str(landing / "september.parquet"),),
        )
        assert cursor.fetchone() == (len(month(sample, 2008, 9, 0)),)


def test_a_file_missing_a_column_is_reported_by_its_scan_and_never_loaded(sample, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    month(sample, 2008, 7, 0).drop(columns=["Neighborhood"]).to_csv(landing / "broken.csv", index=False)
    sensor = build_landing_sensor(SPEC, landing)
    instance = dg.DagsterInstance.ephemeral()
    first = sensor(dg.build_sensor_context(instance=instance))
    (request,) = first.run_requests
    build_scan_job(SPEC).execute_in_process(
        run_config=request.run_config, instance=instance, tags=request.tags, raise_on_error=False
    )
    second = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert second.run_requests == []
    assert "broken.csv" in second.skip_reason.skip_message and "neighborhood" in second.skip_reason.skip_message
