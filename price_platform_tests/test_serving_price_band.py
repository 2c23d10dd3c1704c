"""A record inside every column's range but physically impossible (one dimension 10x the others): its price is
capped to the band learned from the training prices and flagged in the answer and the log, and a YAML rule
refuses it outright."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import psycopg2
import pytest

from price_platform.datasets import DatasetError, DatasetSpec, load_dataset
from price_platform.modeling import build_blend_pipeline
from price_platform.record_rules import broken_rules
from serving.fast_path import PipelinePredictor, capped_flags, compile_pipeline
from serving.prediction_log import LoggedPredictions, PredictionLog
from serving.schemas import Prediction
from serving.services import ImpossibleRecords, refuse_impossible

RULE = "length <= 4 * width"


def boxes_spec(**extra: Any) -> DatasetSpec:
    """Crates priced by their volume: three dimensions, each allowed from 1 to 100."""
    dimension = {"min": 1, "max": 100}
    return DatasetSpec.model_validate({
        "name": "crates", "target": "price",
        "numeric": {"length": dimension, "width": dimension, "height": dimension},
        "categorical": {"wood": {"allowed": ["pine", "oak"]}},
        "model": {"price_band_factor": 1.0},
        **extra,
    })  # fmt: skip


def boxes(rows: int, seed: int = 0) -> pd.DataFrame:
    """Crates of roughly equal sides (2 to 10), price proportional to the volume."""
    generator = np.random.default_rng(seed)
    side = generator.uniform(2, 10, rows)
    frame = pd.DataFrame({name: side * generator.uniform(0.8, 1.25, rows) for name in ("length", "width", "height")})
    frame["wood"] = generator.choice(["pine", "oak"], rows)
    frame["price"] = 3.0 * frame["length"] * frame["width"] * frame["height"] * np.where(frame["wood"] == "oak", 1.5, 1.0)
    return frame


@pytest.fixture(scope="module")
def fitted() -> Any:
    spec = boxes_spec()
    frame = boxes(400)
    pipeline = build_blend_pipeline(spec, {"n_estimators": 60}).fit(frame[spec.features], frame[spec.target])
    ordinary = boxes(20, seed=1)
    impossible = pd.DataFrame({"length": [90.0], "width": [9.0], "height": [9.0], "wood": ["oak"], "price": [np.nan]})
    return spec, frame, pipeline, pd.concat([ordinary, impossible], ignore_index=True)


def rows_of(spec: DatasetSpec, frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    return list(frame[spec.features].astype(object).itertuples(index=False, name=None))


def test_the_band_comes_from_the_training_prices_and_caps_a_record_ten_times_longer(fitted) -> None:
    spec, frame, pipeline, probe = fitted
    model = pipeline.named_steps["model"]
    assert model.band_ == (frame["price"].min(), frame["price"].max())  # factor 1.0 from the YAML
    uncapped = np.exp(model.regressor_.predict(pipeline[:-1].transform(probe[spec.features])))
    low, high = model.band_
    # kernel ridge clips the 10x length to its training range: the blend alone no longer runs past every price it saw
    assert (low <= uncapped).all() and (uncapped <= high).all()
    capping = narrowed(pipeline, probe, spec)
    band = capping.named_steps["model"].band_
    prices = capping.predict(probe[spec.features])
    assert prices[-1] == band[1]
    np.testing.assert_array_equal(prices, np.clip(uncapped, *band))
    assert capped_flags(prices, band) == [False] * 20 + [True]


def narrowed(pipeline: Any, probe: pd.DataFrame, spec: DatasetSpec) -> Any:
    """A copy of ``pipeline`` whose band ends just below its uncapped price of the impossible (last) record."""
    model = pipeline.named_steps["model"]
    uncapped = np.exp(model.regressor_.predict(pipeline[:-1].transform(probe[spec.features])))
    capping = copy.deepcopy(pipeline)
    capping.named_steps["model"].band_ = (model.band_[0], float(max(uncapped[:-1].max(), uncapped[-1] * 0.95)))
    assert capping.named_steps["model"].band_[1] < uncapped[-1]
    return capping


def test_the_compiled_path_caps_and_flags_as_the_pipeline_does(fitted) -> None:
    spec, _, fitted_pipeline, probe = fitted
    pipeline = narrowed(fitted_pipeline, probe, spec)
    compiled = compile_pipeline(pipeline, spec.features)
    band = pipeline.named_steps["model"].band_
    assert compiled.band == band and PipelinePredictor(pipeline, spec.features).band == band
    prices = compiled.predict(rows_of(spec, probe))
    np.testing.assert_allclose(prices, pipeline.predict(probe[spec.features]), rtol=1e-6)
    assert capped_flags(prices, compiled.band)[-1] and not any(capped_flags(prices, compiled.band)[:-1])
    assert compiled.predict(rows_of(spec, probe.tail(1)))[0] in band  # one record alone: the same cap
    answer = msgspec.json.decode(msgspec.json.encode(
        Prediction(prediction_id=uuid.uuid4(), price=float(prices[-1]), lower=1.0, upper=2.0, model_version="1", capped=True)
    ))  # fmt: skip
    assert answer["capped"] is True


def test_capped_answers_are_flagged_in_the_prediction_log(postgres) -> None:
    record = msgspec.defstruct("Record", [("length", float)])
    ids = [uuid.uuid4() for _ in range(3)]
    batch = LoggedPredictions(ids, datetime.now(UTC), "1", [record(1.0), record(2.0), record(90.0)],
                              [10.0, 20.0, 30.0], [9.0, 18.0, 27.0], [11.0, 22.0, 33.0], 1.0, None, [False, False, True])  # fmt: skip
    unflagged = LoggedPredictions([uuid.uuid4()], datetime.now(UTC), "1", [record(3.0)], [5.0], [4.0], [6.0], 1.0, None)
    log = PredictionLog(postgres.dsn(), capacity=10)
    for item in (batch, unflagged):
        log.add(item)
    log.start()
    log.stop(timeout=30.0)
    with psycopg2.connect(postgres.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select prediction_id::text, capped from monitoring.predictions where prediction_id = any(%s::uuid[])",
            ([str(i) for i in [*ids, *unflagged.prediction_ids]],),
        )
        stored = dict(cursor.fetchall())
    assert [stored[str(i)] for i in ids] == [False, False, True]
    assert stored[str(unflagged.prediction_ids[0])] is False


def test_a_yaml_rule_refuses_the_impossible_record_naming_the_rule(fitted) -> None:
    spec, _, _, probe = fitted
    ruled = boxes_spec(rules=[RULE, "height >= 0.25 * width"])
    rows = rows_of(ruled, probe)
    assert broken_rules(ruled, rows) == [(20, RULE)]
    with pytest.raises(ImpossibleRecords) as refused:
        refuse_impossible(ruled, rows)
    assert refused.value.records == [20]
    assert str(refused.value).startswith(f"record 20: breaks the data set's rule {RULE!r}")
    missing = [(None, 9.0, 9.0, "oak")]
    assert broken_rules(ruled, missing) == []  # a missing value is not held to the rule
    refuse_impossible(spec, rows)  # no rules: nothing refused


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("length <= 4 * depth", "unknown names ['depth']"),
        ("length + width", "must be one comparison"),
        ("1 < length < 5", "must be one comparison"),
        ("length <= width **", "does not parse"),
    ],
)
def test_a_bad_rule_is_refused_when_the_yaml_is_read(tmp_path, rule: str, message: str) -> None:
    path = tmp_path / "crates.yaml"
    path.write_text(f"name: crates\ntarget: price\nnumeric: {{length: {{}}, width: {{}}}}\nrules: [{rule!r}]\n")
    with pytest.raises(DatasetError, match="rule") as refused:
        load_dataset(path)
    assert message in str(refused.value)
