"""Synthetic data at any size (``price-platform synth``) and its bulk load with ``COPY``."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from price_platform.bulk_load import BulkLoadError, bulk_load
from price_platform.cli import main
from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.modeling import read_sample
from price_platform.progress import RowProgress
from price_platform.settings import DEFAULT_DATASET
from price_platform.synth import SynthOptions, SynthSource, write
from price_platform.warehouse import migrate


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_dataset(DEFAULT_DATASET)


@pytest.fixture(scope="module")
def sample(spec: DatasetSpec) -> pd.DataFrame:
    return read_sample(spec)


@pytest.fixture(scope="module")
def synth_dir(spec: DatasetSpec, sample: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("landing")
    write(spec, sample, SynthOptions(rows=3000, seed=1), out)
    return out


@pytest.fixture
def database(system_postgres_url: str) -> Iterator[str]:
    """A throwaway, migrated platform database of its own (no other test's partitions in it)."""
    admin = make_url(system_postgres_url).set(drivername="postgresql")
    name = f"pp_scale_{uuid.uuid4().hex[:8]}"
    connection = psycopg2.connect(admin.render_as_string(hide_password=False))
    connection.autocommit = True
    connection.cursor().execute(f'create database "{name}"')
    dsn = admin.set(database=name).render_as_string(hide_password=False)
    migrate(dsn)
    yield dsn
    connection.cursor().execute(f'drop database "{name}" with (force)')
    connection.close()


def table_state(dsn: str) -> tuple[int, int, int]:
    """(raw_sales rows, rejected rows, loads) — to show that a failed load changed nothing."""
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select to_regclass('price_data.raw_sales') is not null")
        raw = 0
        if cursor.fetchone()[0]:
            cursor.execute("select count(*) from price_data.raw_sales")
            raw = cursor.fetchone()[0]
        cursor.execute("select (select count(*) from price_data.rejected_rows), (select count(*) from price_data.loads)")
        rejected, loads = cursor.fetchone()
    return raw, rejected, loads


# --- synth --------------------------------------------------------------------------------


def test_synth_makes_one_file_per_month_with_the_samples_seasonality(spec, sample, synth_dir):
    files = sorted(synth_dir.glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)
    assert len(frame) == 3000
    assert list(frame.columns) == spec.columns
    months = sample.groupby(["year_sold", "mo_sold"]).size()
    assert len(files) == len(months)
    made = frame.groupby(["year_sold", "mo_sold"]).size()
    expected = months / months.sum() * 3000
    assert (made - expected).abs().max() < 1  # largest-remainder rounding of the sample's shares
    for path in files:  # every file holds only its own month
        part = pd.read_parquet(path, columns=["year_sold", "mo_sold"]).drop_duplicates()
        assert len(part) == 1 and path.stem == f"synth-{part.year_sold[0]:04d}-{part.mo_sold[0]:02d}"
    assert frame[spec.id_column].is_unique


def test_synth_values_respect_the_data_set_rules(spec, synth_dir):
    frame = pd.concat([pd.read_parquet(path) for path in synth_dir.glob("*.parquet")], ignore_index=True)
    for name, rule in spec.numeric.items():
        values = frame[name]
        assert values.min() >= rule.min and values.max() <= rule.max, name
        if rule.integer:
            assert (values == values.round()).all(), name
    for name, rule in spec.categorical.items():
        assert set(frame[name].dropna()) <= set(rule.allowed), name
    assert (frame[spec.target] > spec.target_min).all()
    assert (frame["year_built"] <= frame["year_sold"] + 1).all()  # years are not blurred


def test_synth_adds_noise_but_keeps_the_relationship(spec, sample, synth_dir):
    frame = pd.concat([pd.read_parquet(path) for path in synth_dir.glob("*.parquet")], ignore_index=True)
    assert frame["gr_liv_area"].nunique() > sample["gr_liv_area"].nunique()  # not plain copies
    correlation = np.corrcoef(np.log(frame["gr_liv_area"].clip(1)), np.log(frame[spec.target]))[0, 1]
    original = np.corrcoef(np.log(sample["gr_liv_area"].clip(1)), np.log(sample[spec.target]))[0, 1]
    assert abs(correlation - original) < 0.1


def test_synth_drift_grows_sizes_and_prices_towards_the_last_month(spec, sample, tmp_path):
    plain = write(spec, sample, SynthOptions(rows=2000, seed=5), tmp_path / "plain")
    drifted = write(spec, sample, SynthOptions(rows=2000, seed=5, drift=0.5), tmp_path / "drifted")
    first_plain, first_drift = pd.read_parquet(plain[0]), pd.read_parquet(drifted[0])
    last_plain, last_drift = pd.read_parquet(plain[-1]), pd.read_parquet(drifted[-1])
    pd.testing.assert_frame_equal(first_plain, first_drift)  # the ramp starts at zero
    ratio = last_drift[spec.target] / last_plain[spec.target]
    assert np.allclose(ratio, 1.5, rtol=1e-3)
    assert last_drift["gr_liv_area"].mean() > 1.3 * last_plain["gr_liv_area"].mean()
    assert (last_drift["year_built"] == last_plain["year_built"]).all()


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--rows", "0"], "--rows must be at least 1"), (["--rows", "10", "--drift", "-1"], "--drift must not be negative")],
)
def test_synth_refuses_bad_options_and_writes_nothing(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        main(["synth", *argv, "--out", str(tmp_path / "out")])
    assert not list(tmp_path.rglob("*.parquet"))


def test_synth_refuses_a_sample_without_the_data_sets_columns(spec, sample, tmp_path):
    with pytest.raises(ValueError, match=r"lacks columns .*'gr_liv_area'"):
        SynthSource(spec, sample.drop(columns=["gr_liv_area"]))


def test_synth_command_writes_the_landing_folder(tmp_path, capsys):
    assert main(["synth", "--rows", "600", "--out", str(tmp_path)]) == 0
    assert "wrote 600 rows" in capsys.readouterr().out
    assert sum(pq.ParquetFile(path).metadata.num_rows for path in tmp_path.glob("*.parquet")) == 600
    assert not list(tmp_path.glob(".*"))  # no partial files left behind


# --- bulk load ----------------------------------------------------------------------------


def test_bulk_load_copies_every_row_with_the_contract_metadata(spec, synth_dir, database):
    files = sorted(synth_dir.glob("*.parquet"))
    loads = bulk_load(database, spec, files, show_progress=False)
    assert sum(load.rows_loaded for load in loads) == 3000
    assert sum(load.rows_rejected for load in loads) == 0
    source = pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)
    engine = sa.create_engine(database.replace("postgresql://", "postgresql+psycopg2://", 1))
    stored = pd.read_sql("select * from price_data.raw_sales", engine)
    loads_table = pd.read_sql("select * from price_data.loads", engine)
    engine.dispose()
    assert len(stored) == 3000
    assert stored["_load_id"].notna().all() and stored["_ingested_at"].notna().all()
    assert set(stored["_source"]) == {"landing"}
    expected_keys = source.year_sold.astype(int).astype(str) + "-" + source.mo_sold.astype(int).map("{:02d}".format) + "-01"
    assert sorted(stored["_partition_key"]) == sorted(expected_keys)
    merged = stored.assign(sale_id=stored.sale_id.astype(int)).merge(source, on="sale_id", suffixes=("", "_file"))
    assert np.allclose(merged["sale_price"], merged["sale_price_file"])
    assert (merged["neighborhood"] == merged["neighborhood_file"]).all()
    assert len(loads_table) == len(files) and loads_table.rows_loaded.sum() == 3000


def test_bulk_load_again_replaces_the_files_rows(spec, synth_dir, database):
    files = sorted(synth_dir.glob("*.parquet"))[:3]
    bulk_load(database, spec, files, show_progress=False, workers=1)
    bulk_load(database, spec, files, show_progress=False, workers=1)
    expected = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    assert table_state(database)[0] == expected


def _bad_copy(path: Path, out: Path, change) -> Path:  # noqa: ANN001
    frame = pd.read_parquet(path)
    change(frame)
    target = out / path.name
    frame.to_parquet(target, index=False)
    return target


def test_bulk_load_sets_bad_rows_aside_with_their_reasons(spec, synth_dir, database, tmp_path):
    source = sorted(synth_dir.glob("*.parquet"))[10]

    def spoil(frame: pd.DataFrame) -> None:
        frame.loc[0, "gr_liv_area"] = -5
        frame.loc[1, "neighborhood"] = "Atlantis"
        frame.loc[2, "sale_price"] = None
        frame.loc[3, "sale_id"] = frame.loc[4, "sale_id"]

    path = _bad_copy(source, tmp_path, spoil)
    rows = pq.ParquetFile(path).metadata.num_rows
    (load,) = bulk_load(database, spec, [path], show_progress=False, max_rejected_share=0.5)
    assert load.rows_rejected == 4 and load.rows_loaded == rows - 4
    with psycopg2.connect(database) as connection, connection.cursor() as cursor:
        cursor.execute("select row_number, reasons from price_data.rejected_rows order by row_number")
        rejected = dict(cursor.fetchall())
    assert rejected == {
        1: ["gr_liv_area below 0"],
        2: ["neighborhood not an allowed category"],
        3: ["sale_price is missing"],
        5: ["sale_id repeats an earlier row's"],
    }


def test_bulk_load_refuses_a_file_with_too_many_bad_rows_and_keeps_the_table(spec, synth_dir, database, tmp_path):
    files = sorted(synth_dir.glob("*.parquet"))
    bulk_load(database, spec, files[:2], show_progress=False)
    before = table_state(database)
    path = _bad_copy(files[1], tmp_path, lambda frame: frame.__setitem__("lot_area", -1.0))
    with pytest.raises(BulkLoadError, match=r"rows break the data set's rules .*nothing was loaded"):
        bulk_load(database, spec, [path], show_progress=False)
    assert table_state(database) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda frame: frame.drop(columns=["gr_liv_area"], inplace=True), r"missing columns \['gr_liv_area'\]"),
        (lambda frame: frame.__setitem__("mo_sold", 13), r"not a month \(1-12\)"),
        (lambda frame: frame.__setitem__("year_sold", 2007.5), "sale month cannot be read"),
        (lambda frame: frame.__setitem__("lot_area", "big"), "'lot_area' cannot be read as a number"),
        (lambda frame: frame.drop(frame.index, inplace=True), "no rows"),
    ],
)
def test_bulk_load_refuses_a_broken_file_and_writes_nothing(spec, synth_dir, database, tmp_path, change, message):
    files = sorted(synth_dir.glob("*.parquet"))
    bulk_load(database, spec, files[:1], show_progress=False)
    before = table_state(database)
    path = _bad_copy(files[0], tmp_path, change)
    with pytest.raises(BulkLoadError, match=message):
        bulk_load(database, spec, [path], show_progress=False)
    assert table_state(database) == before


def test_bulk_load_refuses_a_file_that_is_not_parquet_before_loading_any(spec, synth_dir, database, tmp_path):
    path = tmp_path / "zz-sales.parquet"
    path.write_text("sale_id,sale_price\n1,100\n")
    good = sorted(synth_dir.glob("*.parquet"))[0]
    with pytest.raises(BulkLoadError, match="not a readable Parquet file"):
        bulk_load(database, spec, [good, path], show_progress=False)
    with pytest.raises(BulkLoadError, match="no such file"):
        bulk_load(database, spec, [good, tmp_path / "gone.parquet"], show_progress=False)
    assert table_state(database) == (0, 0, 0)


def test_bulk_load_command_loads_the_landing_folder(synth_dir, database, monkeypatch, capsys):
    from price_platform.settings import get_settings

    url = make_url(database.replace("postgresql://", "postgresql+psycopg2://"))
    monkeypatch.setenv("PRICE_PLATFORM_DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("PRICE_PLATFORM_DATABASE_NAME", url.database)
    monkeypatch.setenv("PRICE_PLATFORM_LANDING_DIR", str(synth_dir))
    get_settings.cache_clear()
    try:
        assert main(["bulk-load", "--no-progress"]) == 0
    finally:
        get_settings.cache_clear()
    assert "loaded 3,000 rows from" in capsys.readouterr().out
    assert table_state(database)[0] == 3000


def test_arrow_string_columns_stay_text(spec, database, synth_dir, tmp_path):
    """A file whose numbers arrive as text columns (e.g. exported from a spreadsheet) still loads."""
    source = sorted(synth_dir.glob("*.parquet"))[0]
    table = pq.read_table(source)
    table = table.set_column(table.schema.get_field_index("lot_area"), "lot_area", table["lot_area"].cast(pa.string()))
    path = tmp_path / source.name
    pq.write_table(table, path)
    (load,) = bulk_load(database, spec, [path], show_progress=False)
    assert load.rows_loaded == table.num_rows


def test_bulk_load_trims_text_and_reads_empty_text_as_missing(spec, synth_dir, database, tmp_path):
    """As ingestion does: surrounding blanks go, an empty value is a missing one."""

    def blanks(frame: pd.DataFrame) -> None:
        frame.loc[0, "mas_vnr_type"] = ""  # nullable: loads as NULL
        frame.loc[1, "neighborhood"] = "  North_Ames "
        frame.loc[2, "sale_type"] = " "  # not nullable: a missing value, rejected

    path = _bad_copy(sorted(synth_dir.glob("*.parquet"))[5], tmp_path, blanks)
    (load,) = bulk_load(database, spec, [path], show_progress=False, max_rejected_share=0.5)
    assert load.rows_rejected == 1
    with psycopg2.connect(database) as connection, connection.cursor() as cursor:
        cursor.execute("select mas_vnr_type from price_data.raw_sales where _row_number = 1")
        assert cursor.fetchall() == [(None,)]
        cursor.execute("select neighborhood from price_data.raw_sales where _row_number = 2")
        assert cursor.fetchall() == [("North_Ames",)]
        cursor.execute("select reasons from price_data.rejected_rows")
        assert cursor.fetchall() == [(["sale_type is missing"],)]


# --- progress -----------------------------------------------------------------------------


def test_synth_command_reports_rows_done_and_rate_as_log_lines(tmp_path, capsys):
    """Not a terminal (pytest captures stderr): whole lines, no carriage-return redraws."""
    assert main(["synth", "--rows", "3000", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"synth: 3,000 of 3,000 rows \(100%\), [\d,]+ rows/s, elapsed \d\d:\d\d, ETA 00:00", last), last


def test_synth_command_is_quiet_with_no_progress(tmp_path, capsys):
    assert main(["synth", "--rows", "300", "--out", str(tmp_path), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_bulk_load_command_reports_rows_done_and_rate(synth_dir, database, monkeypatch, capsys):
    from price_platform.settings import get_settings

    url = make_url(database.replace("postgresql://", "postgresql+psycopg2://"))
    monkeypatch.setenv("PRICE_PLATFORM_DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("PRICE_PLATFORM_DATABASE_NAME", url.database)
    monkeypatch.setenv("PRICE_PLATFORM_LANDING_DIR", str(synth_dir))
    get_settings.cache_clear()
    try:
        assert main(["bulk-load"]) == 0
    finally:
        get_settings.cache_clear()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "COPY raw_sales: 0 of 3,000 rows (0%)"
    assert re.fullmatch(r"COPY raw_sales: 3,000 of 3,000 rows \(100%\), [\d,]+ rows/s, elapsed \d\d:\d\d, ETA 00:00", lines[-1])


def test_progress_line_gives_the_mean_rate_and_the_time_left():
    out = io.StringIO()
    progress = RowProgress(1000, "work", file=out)
    progress.update(250)
    progress.start_t = progress._time() - 10  # 250 rows in 10 s: 25 rows/s, 750 rows (30 s) to go
    assert progress.line() == "work: 250 of 1,000 rows (25%), 25 rows/s, elapsed 00:10, ETA 00:30"
    progress.close()
    assert out.getvalue().splitlines()[-1].startswith("work: 250 of 1,000 rows (25%), 25 rows/s")
