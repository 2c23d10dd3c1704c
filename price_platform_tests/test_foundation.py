"""The foundation: settings, data set descriptions, the embedded server and migrations."""

from __future__ import annotations

import psycopg2
import pytest

from price_platform.datasets import DatasetError, load_dataset
from price_platform.settings import DEFAULT_DATASET
from price_platform.warehouse import migrate


def test_bundled_dataset_describes_the_sample() -> None:
    spec = load_dataset(DEFAULT_DATASET)
    assert spec.target == "sale_price"
    assert spec.source.path is not None and spec.source.path.exists()
    assert {"neighborhood", "gr_liv_area"} <= set(spec.features)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just\n- a list\n", "must be a mapping"),
        ("name: x\ntarget: price\nsegments: [nope]\n", "segments names unknown columns"),
        ("name: x\ntarget: price\nnumeric: {a: {}}\ncategorical: {a: {}}\n", "both numeric and categorical"),
        ("name: x\ntarget: price\ntime: {month_column: m, start: '2006-01'}\n", "time needs either"),
        ("name: x\ntarget: price\ntime: {column: d, month_column: m, start: '2006-01'}\n", "not with a date"),
        ("name: x\ntarget: price\ntime: {year_column: y, start: '2006-03'}\n", "starts and ends in a year"),
        ("name: x\ntarget: price\ntime: {year_column: y, start: 2010, end: 2008}\n", "before start"),
        ("name: x\ntarget: price\noutliers: [{column: a, above: 1}]\n", "not a numeric column"),
        ("name: x\ntarget: price\nnumeric: {a: {}}\noutliers: [{column: a}]\n", "needs `above` or `below`"),
        ("name: x\ntarget: price\nnumeric: {a: {}}\nderived: {b: 'a + c'}\n", "unknown names ['c']"),
        ("name: x\ntarget: price\nbogus: 1\n", "Extra inputs are not permitted"),
        ("name: x\ntarget: price\nnumeric: {a: {min: low}}\n", "numeric.a.min"),
        ("name: x\nnumeric: {a: {}}\n", "target\n  Field required"),
        ("name: x\ntarget: price\nnumeric: {a: {min: 5, max: 1}}\n", "min 5 is above max 1"),
        ("name: x\ntarget: price\nnumeric: {Bad Name: {}}\n", "numeric: column names ['Bad Name'] must match"),
        ("name: x\ntarget: Price\n", "target: column names ['Price'] must match"),
        ("name: x\ntarget: price\nnumeric: {a: {}}\nderived: {b: 'a +* 2'}\n", "derived feature 'b'"),
        ("name: [unclosed\n", "cannot read"),
    ],
)
def test_bad_dataset_description_names_the_file_and_problem(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DatasetError) as raised:
        load_dataset(path)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_migrations_are_idempotent(postgres) -> None:
    assert migrate(postgres.dsn()) == []
    with psycopg2.connect(postgres.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select schema_name from information_schema.schemata"
            " where schema_name in ('price_data', 'model_registry', 'monitoring')"
        )
        assert {row[0] for row in cursor.fetchall()} == {"price_data", "model_registry", "monitoring"}
