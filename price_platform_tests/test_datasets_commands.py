"""``price-platform datasets init`` drafts a description that loads and passes ``check``; ``check`` prints every problem."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from price_platform.cli import main
from price_platform.datasets import load_dataset


def _homes(rows: int = 240, seed: int = 1) -> pd.DataFrame:
    """Sales whose price follows area, rooms and a kind, with noise (no single feature is the price)."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(40, 200, rows).round(1)
    rooms = rng.integers(1, 6, rows)
    kind = rng.choice(["flat", "house", "loft"], rows)
    price = (area * 1200 * (1 + rooms / 10) * np.where(kind == "house", 1.3, 1.0) * np.exp(rng.normal(0, 0.25, rows))).round()
    return pd.DataFrame({"LivingArea": area, "rooms": rooms, "kind": kind, "price": price})


def _init(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["datasets", "init", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _check(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["datasets", "check", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _draft_passes_check(capsys, table: Path) -> tuple[dict, str]:
    """Run init then check on ``table``; return the YAML as data and as text."""
    code, out, err = _init(capsys, str(table))
    assert code == 0, out + err
    written = table.with_name(re.sub(r"(\.csv\.gz|\.csv|\.parquet)$", "", table.name) + ".yaml")
    assert f"wrote {written}" in out
    load_dataset(written)
    code, out, err = _check(capsys, str(written))
    assert code == 0, out + err
    assert out.startswith(f"OK: {written} and ") and out.count("\n") == 1
    text = written.read_text()
    return yaml.safe_load(text), text


def test_init_on_a_table_with_a_date_an_id_a_leak_and_a_one_hot_group(tmp_path, capsys) -> None:
    frame = _homes()
    frame.insert(0, "ID", np.arange(1, len(frame) + 1))
    frame.insert(1, "Sale Date", pd.date_range("2019-03-01", periods=len(frame), freq="3D").strftime("%Y-%m-%d"))
    frame["log_price"] = np.log(frame["price"])
    heating = np.random.default_rng(2).integers(0, 3, len(frame))
    frame["heat_gas"], frame["heat_oil"] = (heating == 0).astype(int), (heating == 1).astype(int)
    frame["2nd_floor"] = np.random.default_rng(3).integers(0, 2, len(frame))
    frame["notes"] = [f"note {i}" for i in range(len(frame))]
    frame.to_csv(tmp_path / "homes.csv", index=False)

    data, text = _draft_passes_check(capsys, tmp_path / "homes.csv")

    assert data["target"] == "price" and data["id_column"] == "id"
    assert data["time"] == {"column": "sale_date", "start": "2019-03"}
    assert data["one_hot"] == {"heat": ["heat_gas", "heat_oil"]}
    assert data["categorical"]["heat"] == {"allowed": ["heat_gas", "heat_oil"], "nullable": True}
    assert data["categorical"]["kind"] == {"allowed": ["flat", "house", "loft"]}
    assert data["rename"] == {"2nd_floor": "c_2nd_floor"}
    assert set(data["numeric"]) == {"living_area", "rooms", "c_2nd_floor"}
    # ranges are the seen ones with a margin, integers stay integers, 0/1 stays 0..1
    assert data["numeric"]["rooms"] == {"min": 0, "max": 6, "integer": True}
    assert data["numeric"]["c_2nd_floor"] == {"min": 0, "max": 1, "integer": True}
    area = data["numeric"]["living_area"]
    assert area["min"] < frame["LivingArea"].min() and area["max"] > frame["LivingArea"].max()
    # the leak is there, commented out with its reason; free text is left out with its reason
    assert re.search(r"^  # log_price: .*LEFT OUT: a near-exact function of the target price", text, re.MULTILINE)
    assert "log_price" not in data["numeric"]
    assert re.search(r"^#   notes: text with 240 different values", text, re.MULTILINE)
    assert "EDIT" in text


def test_init_on_a_table_with_a_year_only(tmp_path, capsys) -> None:
    frame = _homes(seed=4)
    frame["year"] = np.random.default_rng(5).integers(2011, 2016, len(frame))
    frame["year_built"] = np.random.default_rng(6).integers(1950, 2010, len(frame))
    frame.to_csv(tmp_path / "cars.csv.gz", index=False, compression="gzip")

    data, _ = _draft_passes_check(capsys, tmp_path / "cars.csv.gz")

    assert data["time"] == {"year_column": "year", "start": "2011"}
    assert load_dataset(tmp_path / "cars.yaml").time.granularity == "year"
    assert "id_column" not in data


def test_init_on_a_table_without_time_from_parquet(tmp_path, capsys) -> None:
    frame = _homes(seed=7).rename(columns={"price": "amount"})
    frame["rownames"] = np.arange(1, len(frame) + 1)
    frame.to_parquet(tmp_path / "flats.parquet")

    data, text = _draft_passes_check(capsys, tmp_path / "flats.parquet")

    assert "time" not in data and "# time: no date or sale-year column found" in text
    assert data["target"] == "amount" and data["id_column"] == "rownames"
    assert data["source"] == {"path": "flats.parquet"}


def test_init_on_a_table_with_integer_codes(tmp_path, capsys) -> None:
    frame = _homes(seed=8)
    frame["zone_code"] = np.random.default_rng(9).integers(1, 9, len(frame))
    frame.loc[3, "zone_code"] = None  # a missing code: pandas writes the column as floats, 3.0
    frame.to_csv(tmp_path / "zones.csv", index=False)
    assert "3.0" in (tmp_path / "zones.csv").read_text() or "1.0" in (tmp_path / "zones.csv").read_text()

    data, _ = _draft_passes_check(capsys, tmp_path / "zones.csv")

    zone = data["categorical"]["zone_code"]
    assert zone["codes"] == "integer" and zone["nullable"] is True
    assert zone["allowed"] == sorted(int(v) for v in frame["zone_code"].dropna().unique())
    assert load_dataset(tmp_path / "zones.yaml").categorical["zone_code"].allowed[0] == "1"


def test_init_never_overwrites_without_force(tmp_path, capsys) -> None:
    _homes().to_csv(tmp_path / "homes.csv", index=False)
    output = tmp_path / "mine.yaml"
    output.write_text("name: edited_by_hand\n")

    code, _, err = _init(capsys, str(tmp_path / "homes.csv"), "--output", str(output))

    assert code == 1 and f"{output} exists; not overwritten (give --force to replace it)" in err
    assert output.read_text() == "name: edited_by_hand\n"
    code, _out, err = _init(capsys, str(tmp_path / "homes.csv"), "--output", str(output), "--force")
    assert code == 0, err
    assert load_dataset(output).target == "price"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["homes.csv", "mine.yaml"]  # no temporary file left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kind,rooms\nflat,1\nloft,-2\n", "no column can be the target: a price is a number above 0 in every row"),
        ("kind,price\n", "no rows; the file has a header but no records"),
        ("", "the file is empty"),
    ],
)
def test_init_on_a_file_it_cannot_use_says_why_and_writes_nothing(tmp_path, capsys, content: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(content)

    code, _out, err = _init(capsys, str(tmp_path / "bad.csv"))

    assert code == 1 and message in err and "cannot draft a description" in err
    assert [p.name for p in tmp_path.iterdir()] == ["bad.csv"]


def test_init_on_a_missing_file(tmp_path, capsys) -> None:
    code, _, err = _init(capsys, str(tmp_path / "nope.csv"))
    assert code == 1 and "nope.csv: no such file" in err
    assert list(tmp_path.iterdir()) == []


BROKEN = """\
name: Homes
target: price
time:
  column: sale_date
  start: 2019-1
numeric:
  living_area: {min: 300, max: 220}
  rooms: {min: low}
  area2: {max: 50, intger: true}
categorical:
  zone: {codes: integer, allowed: [1, 2, x]}
segments: [kind, nope]
derived:
  per_room: living_area / rooms +* 2
rename:
  old_name: Second
pii: [rooms]
pii: [kind]
"""


def test_check_prints_every_problem_of_a_description_with_its_line(tmp_path, capsys) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)

    code, out, err = _check(capsys, str(path))

    assert code == 1
    expected = [
        (1, "name", "String should match pattern"),
        (5, "time.start", "String should match pattern"),
        (7, "numeric.living_area", "min 300 is above max 220"),
        (8, "numeric.rooms.min", "valid number"),
        (9, "numeric.area2.intger", "unknown field"),
        (11, "categorical.zone", "codes: integer, but ['x'] are not integers"),
        (12, "segments.1", "unknown columns: ['nope']"),
        (14, "derived.per_room", "does not parse"),
        (16, "rename.old_name", "column names ['Second'] must match ^[a-z][a-z0-9_]*$"),
        (18, "pii", "given twice (lines 17 and 18)"),
    ]
    lines = out.splitlines()
    for line, field, message in expected:
        assert any(row.startswith(f"{path}:{line}: {field}: ") and message in row for row in lines), (line, field, out)
    assert f"{len(lines)} problems in {path}" in err
    assert len(lines) >= len(expected)


def test_check_of_unreadable_yaml_names_the_line(tmp_path, capsys) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntarget: price\nnumeric: {a: [\n")
    code, out, _ = _check(capsys, str(path))
    assert code == 1 and out.startswith(f"{path}:4: not valid YAML")


def test_check_of_a_file_not_matching_prints_its_columns_and_every_value_problem(tmp_path, capsys) -> None:
    frame = _homes(rows=60)
    frame.insert(0, "id", [*range(1, 60), 1])  # one id twice
    frame.loc[5, "kind"] = "castle"
    frame.loc[7, "rooms"] = 12
    frame["double_price"] = frame["price"] * 2
    frame.to_csv(tmp_path / "homes.csv", index=False)
    (tmp_path / "homes.yaml").write_text(
        "name: homes\n"
        "target: price\n"
        "id_column: id\n"
        "numeric:\n"
        "  living_area: {min: 0, max: 500}\n"
        "  rooms: {min: 1, max: 8, integer: true}\n"
        "  double_price: {}\n"
        "  garden_area: {min: 0}\n"
        "categorical:\n"
        "  kind: {allowed: [flat, house, loft]}\n"
    )

    code, out, _ = _check(capsys, str(tmp_path / "homes.yaml"), "--file", str(tmp_path / "homes.csv"))

    assert code == 1
    yaml_path = tmp_path / "homes.yaml"
    assert (f"{yaml_path}:3: id_column: 2 values that are not unique (an id names one record): row 1: '1', row 60: '1'"
            in out)
    assert f"{yaml_path}:6: numeric.rooms: 1 values above max 8: row 8: 12" in out
    assert f"{yaml_path}:7: numeric.double_price: a near-exact function of the target 'price'" in out
    assert (f"{yaml_path}:8: numeric.garden_area: column 'garden_area' is not in homes.csv; the file has id,"
            " living_area, rooms, kind, price, double_price" in out)
    assert f"{yaml_path}:10: categorical.kind: 1 values not in `allowed`: 'castle' (1x)" in out
    assert len(out.splitlines()) == 5


def test_check_without_a_file_checks_the_description_alone(tmp_path, capsys) -> None:
    (tmp_path / "d.yaml").write_text("name: d\ntarget: price\nnumeric: {a: {min: 0}}\n")
    code, out, _ = _check(capsys, str(tmp_path / "d.yaml"))
    assert code == 0
    assert out == (f"OK: {tmp_path / 'd.yaml'} (no file given, none in source.path): target price, 1 numeric and 0"
                   " categorical features, time: none, id: none\n")


def test_init_folds_adjacent_exclusive_flags_without_a_prefix(tmp_path, capsys) -> None:
    frame = _homes(seed=10)
    make = np.random.default_rng(11).integers(0, 3, len(frame))
    frame["leather"] = np.random.default_rng(12).integers(0, 2, len(frame))  # independent: stays a feature
    for index, brand in enumerate(["buick", "cadillac", "saab"]):
        frame[brand] = (make == index).astype(int)
    frame.to_csv(tmp_path / "cars.csv", index=False)

    data, text = _draft_passes_check(capsys, tmp_path / "cars.csv")

    assert data["one_hot"] == {"one_hot_1": ["buick", "cadillac", "saab"]}
    assert "one_hot_1: [buick, cadillac, saab]  # EDIT: name the group" in text
    assert data["categorical"]["one_hot_1"] == {"allowed": ["buick", "cadillac", "saab"]}
    assert data["numeric"]["leather"] == {"min": 0, "max": 1, "integer": True}


def test_check_names_the_source_path_line_when_its_file_is_missing(tmp_path, capsys) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("name: d\nsource:\n  path: gone.csv\ntarget: price\n")
    code, out, _ = _check(capsys, str(path))
    assert code == 1
    assert out == f"{path}:3: source.path: {tmp_path / 'gone.csv'}: no such file\n"
