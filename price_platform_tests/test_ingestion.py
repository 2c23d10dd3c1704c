"""Ingestion of the bundled sample, landed files and a SQL source into ``price_data.raw_sales``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import psycopg2
import pytest
from sqlalchemy.engine import make_url

from price_platform.datasets import bundled_sample, load_dataset
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.loading import ingest_partition
from price_platform.settings import DEFAULT_DATASET

SPEC = load_dataset(DEFAULT_DATASET)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    """The bundled sample with its original headers and values (e.g. 'WD ' with a trailing blank)."""
    return pd.read_csv(bundled_sample(), dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def dsn(postgres) -> str:
    """The session database with raw_sales created by a first load."""
    ingest_partition(postgres.dsn(), SPEC, "2006-01-01")
    return postgres.dsn()


def month(sample: pd.DataFrame, year: int, mo: int, id_offset: int = 0) -> pd.DataFrame:
    """The sample's sales of one month, ids shifted so that they do not collide with the bundled ones."""
    rows = sample[(sample["Year_Sold"] == str(year)) & (sample["Mo_Sold"] == str(mo))].copy()
    rows["sale_id"] = (rows["sale_id"].astype(int) + id_offset).astype(str)
    return rows


def query(dsn: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    connection.close()
    return rows


def admin_execute(server_url, statement: str) -> None:
    """Run a statement outside a transaction (create/drop database)."""
    connection = psycopg2.connect(server_url.set(drivername="postgresql").render_as_string(False))
    connection.autocommit = True
    try:
        connection.cursor().execute(statement)
    finally:
        connection.close()


def table_state(dsn: str) -> tuple:
    """A fingerprint of everything ingestion writes."""
    return tuple(
        query(dsn, f"select count(*), coalesce(sum(hashtext(t::text)::bigint), 0) from {table} t")[0]
        for table in ("price_data.raw_sales", "price_data.rejected_rows", "price_data.loads")
    )


def test_a_month_partition_holds_that_months_sales(dsn: str, sample: pd.DataFrame) -> None:
    summary = ingest_partition(dsn, SPEC, "2008-03-01")
    expected = set(month(sample, 2008, 3)["sale_id"])
    stored = query(
        dsn, "select sale_id, _load_id::text, _source, _source_file, sale_type from price_data.raw_sales"
        " where _partition_key = '2008-03-01'",
    )
    assert {row[0] for row in stored} == expected
    assert summary.rows_loaded == len(expected) and summary.rows_rejected == 0
    assert {row[1:4] for row in stored} == {(str(summary.load_id), "bundled", str(bundled_sample()))}
    assert "WD" in {row[4] for row in stored} and not any(row[4] != row[4].strip() for row in stored)
    assert query(dsn, "select rows_loaded, source from price_data.loads where load_id = %s", (str(summary.load_id),)) == [
        (len(expected), "bundled")
    ]


def test_rematerialising_a_partition_replaces_its_rows(dsn: str, sample: pd.DataFrame) -> None:
    ingest_partition(dsn, SPEC, "2008-04-01")
    second = ingest_partition(dsn, SPEC, "2008-04-01")
    rows = query(
        dsn, "select count(*), count(distinct _load_id), min(_load_id::text) from price_data.raw_sales"
        " where _partition_key = '2008-04-01'",
    )
    assert rows == [(len(month(sample, 2008, 4)), 1, str(second.load_id))]


def test_landed_csv_and_parquet_files_load_into_their_partitions(dsn: str, sample: pd.DataFrame, tmp_path: Path) -> None:
    ingest_partition(dsn, SPEC, "2009-01-01")
    csv_file = tmp_path / "sales_jan_feb.csv"
    pd.concat([month(sample, 2009, 1, 100_000), month(sample, 2009, 2, 100_000)]).to_csv(csv_file, index=False)
    parquet_file = tmp_path / "sales_mar.parquet"
    march = month(sample, 2009, 3, 100_000)
    numeric = [c for c in march.columns if c.lower().replace("_", "") in {n.replace("_", "") for n in SPEC.numeric}]
    march[numeric] = march[numeric].apply(pd.to_numeric)
    march.to_parquet(parquet_file)
    for key, source in [("2009-01-01", csv_file), ("2009-02-01", csv_file), ("2009-03-01", parquet_file),
                        ("2009-01-01", csv_file)]:
        ingest_partition(dsn, SPEC, key, source)
    counts = dict(
        ((key, source), n) for key, source, n in query(
            dsn, "select _partition_key, _source, count(*) from price_data.raw_sales"
            " where _partition_key in ('2009-01-01', '2009-02-01', '2009-03-01') group by 1, 2",
        )
    )
    assert counts == {
        ("2009-01-01", "bundled"): len(month(sample, 2009, 1)),
        ("2009-01-01", "landing"): len(month(sample, 2009, 1)),
        ("2009-02-01", "landing"): len(month(sample, 2009, 2)),
        ("2009-03-01", "landing"): len(march),
    }
    files = query(dsn, "select distinct _source_file from price_data.raw_sales where _partition_key = '2009-03-01'")
    assert files == [(str(parquet_file),)]


def test_a_sql_query_on_another_postgres_is_a_source(dsn: str, sample: pd.DataFrame, system_postgres_url: str) -> None:
    import sqlalchemy as sa

    name = f"pp_source_{uuid.uuid4().hex[:8]}"
    admin = make_url(system_postgres_url)
    admin_execute(admin, f'create database "{name}"')
    source_url = admin.set(database=name).render_as_string(False)
    try:
        engine = sa.create_engine(source_url)
        month(sample, 2007, 1).to_sql("house_sales", engine, index=False)
        engine.dispose()
        spec = SPEC.model_copy(deep=True)
        spec.source.path = None
        spec.source.query = 'select * from house_sales where "Year_Sold" = \'2007\''
        spec.source.url = source_url.replace("postgresql+psycopg2://", "postgresql://")
        summary = ingest_partition(dsn, spec, "2007-01-01")
        assert summary.source_kind == "sql" and name in summary.source_name
        stored = query(dsn, "select sale_id from price_data.raw_sales where _partition_key = '2007-01-01' and _source = 'sql'")
        assert {row[0] for row in stored} == set(month(sample, 2007, 1)["sale_id"])
    finally:
        admin_execute(admin, f'drop database if exists "{name}" with (force)')
        _forget_source(dsn, "sql")  # the month's bundled rows would share its ids: duplicates for later tests


def _forget_source(dsn: str, source: str) -> None:
    """Remove the stored and rejected rows one source loaded (its load history stays)."""
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("delete from price_data.raw_sales where _source = %s", (source,))
        cursor.execute(
            "delete from price_data.rejected_rows r using price_data.loads l where r.load_id = l.load_id and l.source = %s",
            (source,),
        )
    connection.close()


def _missing_column(rows: pd.DataFrame, path: Path) -> Path:
    rows.drop(columns=["Sale_Price"]).to_csv(path, index=False)
    return path


def _unparsable_value(rows: pd.DataFrame, path: Path) -> Path:
    rows = rows.copy()
    rows.iloc[3, rows.columns.get_loc("Lot_Area")] = "about 9000"
    rows.to_csv(path, index=False)
    return path


def _wrong_encoding(rows: pd.DataFrame, path: Path) -> Path:
    rows = rows.copy()
    rows.iloc[2, rows.columns.get_loc("Neighborhood")] = "Crawford_é"
    rows.to_csv(path, index=False, encoding="latin-1")
    return path


def _no_rows(rows: pd.DataFrame, path: Path) -> Path:
    rows.head(0).to_csv(path, index=False)
    return path


def _missing_column_parquet(rows: pd.DataFrame, path: Path) -> Path:
    parquet = path.with_suffix(".parquet")
    rows.drop(columns=["Neighborhood"]).to_parquet(parquet)
    return parquet


def _empty_file(rows: pd.DataFrame, path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _damaged_parquet(rows: pd.DataFrame, path: Path) -> Path:
    parquet = path.with_suffix(".parquet")
    parquet.write_bytes(b"PAR1 this is not a parquet file")
    return parquet


@pytest.mark.parametrize(
    ("make_file", "expected"),
    [
        (_missing_column, ["header", "missing columns ['sale_price']"]),
        (_unparsable_value, ["column 'lot_area'", "row 4: 'about 9000'"]),
        (_wrong_encoding, ["row 3", "column 'Neighborhood'", "not valid UTF-8"]),
        (_no_rows, ["row 1", "no rows"]),
        (_missing_column_parquet, ["header", "missing columns ['neighborhood']"]),
        (_empty_file, ["the file is empty"]),
        (_damaged_parquet, ["not a readable Parquet file"]),
    ],
    ids=["missing-column", "unparsable-value", "wrong-encoding", "no-rows", "parquet-missing-column", "empty-file",
         "damaged-parquet"],
)
def test_a_bad_file_names_file_column_and_row_and_loads_nothing(
    dsn: str, may_loaded: Path, sample: pd.DataFrame, make_file, expected: list[str]
) -> None:
    before = table_state(dsn)
    assert query(dsn, "select count(*) from price_data.raw_sales where _source_file = %s", (str(may_loaded),))[0][0] > 0
    # the bad version takes the loaded file's name: its earlier rows must survive the failed reload
    path = make_file(month(sample, 2009, 5, 200_000), may_loaded)
    with pytest.raises(IngestionError) as raised:
        ingest_partition(dsn, SPEC, "2009-05-01", path)
    message = str(raised.value)
    assert str(path) in message
    for part in expected:
        assert part in message
    assert table_state(dsn) == before


@pytest.fixture(scope="module")
def may_loaded(dsn: str, sample: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good landed file already in partition 2009-05, which the bad files must leave alone."""
    path = tmp_path_factory.mktemp("landing") / "good.csv"
    month(sample, 2009, 5, 200_000).to_csv(path, index=False)
    ingest_partition(dsn, SPEC, "2009-05-01", path)
    return path


def test_bad_rows_go_to_rejected_rows_with_reasons(dsn: str, sample: pd.DataFrame, tmp_path: Path) -> None:
    rows = month(sample, 2006, 2, 300_000).reset_index(drop=True)
    rows.loc[0, "Sale_Price"] = "0"
    rows.loc[1, "Neighborhood"] = "Atlantis"
    rows.loc[2, "sale_id"] = rows.loc[3, "sale_id"]
    rows.loc[4, "Lot_Area"] = ""
    rows.loc[5, "Gr_Liv_Area"] = "-5"
    path = tmp_path / "feb.csv"
    rows.to_csv(path, index=False)
    for _ in range(2):  # reloading the file replaces its rejected rows too
        summary = ingest_partition(dsn, SPEC, "2006-02-01", path)
    rejected = dict(
        query(dsn, "select row_number, reasons from price_data.rejected_rows where source_file = %s", (str(path),))
    )
    assert rejected == {
        1: ["sale_price: 0.0 is not greater than 0"],
        2: ["neighborhood: 'Atlantis' is not an allowed category"],
        4: [f"sale_id: duplicate id '{rows.loc[3, 'sale_id']}'"],
        5: ["lot_area: missing"],
        6: ["gr_liv_area: -5.0 is outside [0.0, 16926.0]"],
    }
    assert summary.rows_rejected == 5 and summary.rows_loaded == len(rows) - 5
    stored = query(dsn, "select count(*) from price_data.raw_sales where _source_file = %s", (str(path),))
    assert stored == [(len(rows) - 5,)]
    record = query(
        dsn, "select record from price_data.rejected_rows where source_file = %s and row_number = 2", (str(path),)
    )[0][0]
    assert record["neighborhood"] == "Atlantis" and record["sale_type"] == "WD"


def test_a_date_column_places_records_in_their_months(tmp_path: Path) -> None:
    from price_platform.datasets import DatasetSpec
    from price_platform.ingestion.records import PARTITION_KEY, typed_records
    from price_platform.ingestion.sources import read_file

    spec = DatasetSpec.model_validate(
        {"name": "flats", "target": "price", "time": {"column": "sold_on", "start": "2020-01"},
         "numeric": {"rooms": {"min": 1}}}
    )
    path = tmp_path / "flats.csv"
    path.write_text("Sold On,Rooms,Price\n2020-01-31,2,100000\n2020-02-01 10:30,3,150000\n")
    records = typed_records(spec, read_file(path))
    assert list(records[PARTITION_KEY]) == ["2020-01-01", "2020-02-01"]
    path.write_text("Sold On,Rooms,Price\n2020-01-31,2,100000\nsoon,3,150000\n")
    with pytest.raises(IngestionError, match=r"flats.csv: column 'sold_on': not a date.*row 2: 'soon'"):
        typed_records(spec, read_file(path))
