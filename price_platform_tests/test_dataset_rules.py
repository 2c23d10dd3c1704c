"""Data set YAML rules: column names after ``rename``, derived expressions compiled before SQL, integer-coded categoricals."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pandas as pd
import pytest

from price_platform.datasets import DatasetError, DatasetSpec, load_dataset
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.records import typed_records
from price_platform.ingestion.sources import SourceFrame
from price_platform.modeling import build_ridge_baseline
from serving.schemas import InvalidInput, build_schemas, decode

BASE = "name: x\ntarget: price\nnumeric: {a: {}, b: {}}\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("rename: {old: New}\n", "rename: column names ['New'] must match ^[a-z][a-z0-9_]*$"),
        ("rename: {old: 'a; drop table x'}\n", "rename: column names ['a; drop table x'] must match"),
        ("categorical: {c: {}}\none_hot: {c: [c_one, 'C Two']}\n", "one_hot: column names ['C Two'] must match"),
        ("categorical: {'c\"': {}}\n", "categorical: column names ['c\"'] must match"),
        ("derived: {d: \"__import__('os').system('x')\"}\n", "derived feature 'd': "),
        ("derived: {d: 'a; select 1'}\n", "derived feature 'd': 'a; select 1' does not parse"),
        ("derived: {d: 'a ** 2'}\n", "'a ** 2' is not allowed (only column names, numbers"),
        ("derived: {d: \"a + 'text'\"}\n", "\"'text'\" is not allowed"),
        ("derived: {d: 'a + True'}\n", "'True' is not allowed"),
        ("derived: {d: '" + "(" * 400 + "a" + ")" * 400 + "'}\n", "derived feature 'd': "),
        ("derived: {a: 'b * 2'}\n", "derived feature 'a' has the name of a column of the description"),
        ("derived: {Bad: 'a * 2'}\n", "derived: column names ['Bad'] must match"),
        ("id_column: a\n", "id_column 'a' must not also be a feature or the target"),
    ],
)
def test_a_bad_name_or_expression_is_refused_naming_the_field(tmp_path, extra: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + extra)
    with pytest.raises(DatasetError) as raised:
        load_dataset(path)
    assert message in str(raised.value)


def test_every_consistency_problem_is_reported_at_once(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + "rename: {old: New}\nderived: {d: 'a +* 2'}\nsegments: [nope]\narea_column: z\n")
    with pytest.raises(DatasetError) as raised:
        load_dataset(path)
    text = str(raised.value)
    for message in ("rename: column names ['New']", "derived feature 'd'", "segments names unknown columns: ['nope']",
                    "area_column 'z' is not a numeric column"):
        assert message in text


def test_a_valid_description_keeps_its_renamed_and_derived_columns(tmp_path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(BASE + "rename: {'2nd floor': a}\nderived: {ratio: 'a / (b + 1)'}\n")
    spec = load_dataset(path)
    assert spec.rename == {"2nd floor": "a"} and spec.derived == {"ratio": "a / (b + 1)"}


# --- integer-coded categoricals (codes: integer) ----------------------------------------------------------------


def _zoned(allowed: list | None = None, nullable: bool = False) -> DatasetSpec:
    zone: dict = {"codes": "integer", "nullable": nullable}
    if allowed is not None:
        zone["allowed"] = allowed
    return DatasetSpec.model_validate(
        {"name": "zoned", "target": "price", "numeric": {"area": {"min": 0}}, "categorical": {"zone": zone}}
    )


def test_codes_in_the_yaml_are_kept_as_their_text() -> None:
    assert _zoned([1, "2", 3.0, " 04 "]).categorical["zone"].allowed == ["1", "2", "3", "4"]
    with pytest.raises(ValueError, match=r"categorical\.zone\n.*codes: integer, but \['north'\] are not integers"):
        _zoned([1, "north"])


def test_the_api_takes_an_integer_code_and_the_record_holds_its_category_text() -> None:
    schemas = build_schemas(_zoned([1, 2, 3]), max_batch_size=10)

    record = decode(schemas.predict_decoder, b'{"area": 80, "zone": 3}')
    assert record.zone == "3"
    assert msgspec.structs.astuple(record) == (80.0, "3")
    assert [r.zone for r in decode(schemas.predict_decoder, b'[{"area": 1, "zone": "2"}, {"area": 1, "zone": 1}]')] == ["2", "1"]
    with pytest.raises(InvalidInput, match="field `zone`: Invalid enum value 4"):
        decode(schemas.predict_decoder, b'{"area": 80, "zone": 4}')
    documented = schemas.openapi_components()["ZonedRecord"]["properties"]["zone"]
    assert documented == {"type": "integer", "enum": [1, 2, 3]}


def test_an_open_integer_code_is_documented_as_integer_and_refuses_text() -> None:
    schemas = build_schemas(_zoned(nullable=True), max_batch_size=10)

    assert decode(schemas.predict_decoder, b'{"area": 1, "zone": 17}').zone == "17"
    assert decode(schemas.predict_decoder, b'{"area": 1, "zone": 17.0}').zone == "17"
    assert decode(schemas.predict_decoder, b'{"area": 1, "zone": null}').zone is None
    with pytest.raises(InvalidInput, match=r"field `zone`: Expected an integer \(a category code\)"):
        decode(schemas.predict_decoder, b'{"area": 1, "zone": "north"}')
    with pytest.raises(InvalidInput, match="field `zone`: Expected `int`, got `float` with a fraction"):
        decode(schemas.predict_decoder, b'{"area": 1, "zone": 1.5}')
    documented = schemas.openapi_components()["ZonedRecord"]["properties"]["zone"]
    assert documented == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert json.dumps(schemas.record_json_schema()).count('"type": "integer"') == 1


def test_ingestion_stores_a_code_as_the_text_the_api_makes() -> None:
    spec = _zoned()
    frame = pd.DataFrame({"area": ["1", "2", "3"], "zone": ["3", "3.0", " 03 "], "price": ["10", "20", "30"]})
    records = typed_records(spec, SourceFrame("landing", "zones.csv", frame), partition_key="batch-1")
    assert records["zone"].tolist() == ["3", "3", "3"]
    floats = pd.DataFrame({"area": [1.0, 2.0], "zone": [3.0, np.nan], "price": [10.0, 20.0]})  # Parquet with a gap
    assert typed_records(_zoned(nullable=True), SourceFrame("landing", "z.parquet", floats), "b")["zone"].tolist() == ["3", None]
    bad = frame.assign(zone=["3", "north", "2.5"])
    with pytest.raises(IngestionError, match=r"column 'zone': values that are not integer codes .*row 2: 'north', row 3: '2.5'"):
        typed_records(spec, SourceFrame("landing", "zones.csv", bad), partition_key="batch-1")


def test_training_and_serving_see_the_same_category() -> None:
    """A model fitted on ingested records prices zone 3 sent as a JSON integer as its zone-3 rows."""
    spec = _zoned([1, 2, 3])
    rng = np.random.default_rng(0)
    zones = rng.integers(1, 4, 300)
    area = rng.uniform(50, 150, 300)
    frame = pd.DataFrame({"area": area.astype(str), "zone": zones.astype(str),
                          "price": (area * 1000 * np.where(zones == 3, 3.0, 1.0)).astype(str)})
    train = typed_records(spec, SourceFrame("landing", "zones.csv", frame), partition_key="batch-1")
    model = build_ridge_baseline(spec).fit(train[spec.features], np.log(train[spec.target]))
    schemas = build_schemas(spec, max_batch_size=10)

    def served(body: bytes) -> float:
        record = decode(schemas.predict_decoder, body)
        return float(model.predict(pd.DataFrame([msgspec.structs.asdict(record)]))[0])

    trained = float(model.predict(pd.DataFrame({"area": [100.0], "zone": ["3"]}))[0])
    assert served(b'{"area": 100, "zone": 3}') == pytest.approx(trained)
    assert served(b'{"area": 100, "zone": 3}') - served(b'{"area": 100, "zone": 1}') > 0.5  # zone 3 costs about 3x


def test_the_inference_protocol_takes_integer_codes_as_int64() -> None:
    from types import SimpleNamespace

    from serving.controllers.inference_protocol import BadTensors, input_metadata, parse, records_of

    spec = _zoned([1, 2, 3])
    services = SimpleNamespace(
        spec=spec, schemas=build_schemas(spec, max_batch_size=10),
        settings=SimpleNamespace(model_name="zoned", max_batch_size=10),
    )
    served = (services.spec, services.schemas, services.settings)
    assert {t["name"]: t["datatype"] for t in input_metadata(services.spec)} == {"area": "FP64", "zone": "INT64"}

    def request(zone: dict) -> bytes:
        return json.dumps({"inputs": [{"name": "area", "shape": [2], "datatype": "FP64", "data": [80.0, 90.0]},
                                      {"name": "zone", "shape": [2], **zone}]}).encode()

    records = records_of(parse(request({"datatype": "INT64", "data": [3, 1]})), *served)
    assert [r.zone for r in records] == ["3", "1"]
    assert [r.zone for r in records_of(parse(request({"datatype": "BYTES", "data": ["2", "3"]})), *served)] == ["2", "3"]
    with pytest.raises(BadTensors, match="`zone` is an integer-coded categorical feature: send INT64"):
        records_of(parse(request({"datatype": "FP64", "data": [3.0, 1.0]})), *served)
    with pytest.raises(InvalidInput, match="field `zone`: Invalid enum value 4"):
        records_of(parse(request({"datatype": "INT64", "data": [3, 4]})), *served)
