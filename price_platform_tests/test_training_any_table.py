"""The model on a price table that is not Ames, made in the test: members chosen by size and by the YAML,
ordered categories from the YAML, the area behaviour test of what is constrained, answers capped to a band."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.kernel_ridge import KernelRidge
from xgboost import XGBRegressor

from price_platform.datasets import DatasetError, DatasetSpec, load_dataset
from price_platform.modeling import (
    KERNEL_DEFAULTS,
    BoundedKernelRidge,
    ExactOrNystroemKernelRidge,
    NystroemKernelRidge,
    OrderedScores,
    build_blend_pipeline,
    build_ridge_baseline,
    ordered_scales,
)
from price_platform.settings import Settings
from price_platform.training.behaviour import behaviour_failures
from serving.blend import CompiledBlend
from serving.fast_path import compile_pipeline

FAST = {"n_estimators": 40, "learning_rate": 0.2}
GRADES = ["Poor", "Fair", "Good", "Very Good", "Excellent"]


def table_spec(**model: Any) -> DatasetSpec:
    """A small flat-price table's description: a size, a room count, a grade with spaces, a district."""
    return DatasetSpec.model_validate({
        "name": "flats",
        "target": "price",
        "numeric": {"size_m2": {"min": 10, "max": 1000}, "rooms": {"min": 1, "max": 20, "integer": True}},
        "categorical": {"grade": {"allowed": GRADES, "order": GRADES}, "district": {"allowed": ["north", "south", "east"]}},
        "segments": ["district"],
        "area_column": "size_m2",
        "derived": {"size_per_room": "size_m2 / rooms"},
        "model": model,
    })  # fmt: skip


def table(rows: int, seed: int = 0, *, area_slope: float = 1.0) -> pd.DataFrame:
    """Flats whose log price grows with the grade's rank and (``area_slope``) with the log size."""
    generator = np.random.default_rng(seed)
    rooms = generator.integers(1, 7, rows)
    size = rooms * generator.uniform(15, 35, rows)
    grade = generator.integers(0, len(GRADES), rows)
    district = generator.choice(["north", "south", "east"], rows)
    log_price = 10 + area_slope * np.log(size) + 0.15 * grade + np.where(district == "north", 0.3, 0.0)
    return pd.DataFrame({
        "size_m2": size, "rooms": rooms, "grade": np.array(GRADES, dtype=object)[grade], "district": district,
        "price": np.exp(log_price + generator.normal(0, 0.05, rows)),
    })  # fmt: skip


def rows_of(spec: DatasetSpec, frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    return list(frame[spec.features].astype(object).itertuples(index=False, name=None))


def fitted(spec: DatasetSpec, frame: pd.DataFrame):
    return build_blend_pipeline(spec, FAST).fit(frame[spec.features], frame[spec.target])


def members(pipeline) -> dict[str, Any]:
    """Each member's fitted regressor (for the kernel ridge, the kind its fit chose)."""
    voting = pipeline.named_steps["model"].regressor_
    fitted = [member.steps[-1][1] for member in voting.estimators_]
    chosen = [regressor.estimator_ if isinstance(regressor, ExactOrNystroemKernelRidge) else regressor
              for regressor in fitted]
    return dict(zip([n for n, _ in voting.estimators], chosen, strict=True))


def test_kernel_ridge_is_exact_up_to_the_size_threshold_and_nystroem_above_it_and_both_compile() -> None:
    frame, fresh = table(600), table(200, seed=1)
    fresh.loc[:9, "size_m2"] *= 50  # far outside the training range: both kinds clip it, and so must serving
    for threshold, kind in ((600, BoundedKernelRidge), (599, NystroemKernelRidge)):
        spec = table_spec(exact_kernel_rows=threshold, kernel_components=150)
        pipeline = fitted(spec, frame)
        kernel = members(pipeline)["kernel_ridge"]
        assert type(kernel) is kind
        compiled = compile_pipeline(pipeline, spec.features)
        assert isinstance(compiled, CompiledBlend)
        expected = pipeline.predict(fresh[spec.features])
        np.testing.assert_allclose(compiled.predict(rows_of(spec, fresh)), expected, rtol=1e-6)
    assert kernel.X_fit_.shape[0] == 150  # the landmark rows, not the 600 training rows


def test_nystroem_on_every_row_is_kernel_ridge_and_its_chunks_do_not_change_it() -> None:
    generator = np.random.default_rng(4)
    rows, target = generator.normal(size=(300, 6)), generator.normal(size=300)
    exact = BoundedKernelRidge(kernel="polynomial", **KERNEL_DEFAULTS).fit(rows, target)
    every = NystroemKernelRidge(**KERNEL_DEFAULTS, n_components=300).fit(rows, target)
    fresh = generator.normal(size=(50, 6))
    np.testing.assert_allclose(every.predict(fresh), exact.predict(fresh), rtol=1e-6, atol=1e-8)
    few = NystroemKernelRidge(**KERNEL_DEFAULTS, n_components=40, chunk_rows=7).fit(rows, target)
    whole = NystroemKernelRidge(**KERNEL_DEFAULTS, n_components=40, chunk_rows=10_000).fit(rows, target)
    np.testing.assert_allclose(few.predict(fresh), whole.predict(fresh), rtol=1e-9, atol=1e-10)


def test_kernel_ridge_prices_a_record_far_outside_its_training_range_as_the_edge_of_that_range() -> None:
    generator = np.random.default_rng(5)
    rows, target = generator.normal(size=(300, 6)), generator.normal(size=300)
    far, edge = rows[:5].copy(), rows[:5].copy()
    far[:, 0], edge[:, 0] = 100 * rows[:, 0].max(), rows[:, 0].max()
    plain = KernelRidge(kernel="polynomial", **KERNEL_DEFAULTS).fit(rows, target)
    assert np.abs(plain.predict(far) - plain.predict(edge)).min() > 1.0  # unclipped, the polynomial runs away
    for model in (BoundedKernelRidge(kernel="polynomial", **KERNEL_DEFAULTS), NystroemKernelRidge(**KERNEL_DEFAULTS, n_components=60)):
        model.fit(rows, target)
        np.testing.assert_allclose(model.input_max_, rows.max(axis=0))
        np.testing.assert_allclose(model.predict(far), model.predict(edge), rtol=1e-12)
        inside = generator.uniform(rows.min(axis=0), rows.max(axis=0), size=(20, 6))
        unclipped = model.predict(inside) if isinstance(model, NystroemKernelRidge) else KernelRidge.predict(model, inside)
        np.testing.assert_allclose(model.predict(inside), unclipped, rtol=1e-12)


def test_nystroem_memory_grows_with_its_chunks_and_landmarks_not_with_the_rows() -> None:
    """20,000 rows: the exact kernel would hold 20,000^2 floats (3.2 GB); the fit allocates a few MB."""
    generator = np.random.default_rng(5)
    rows, target = generator.normal(size=(20_000, 10)), generator.normal(size=20_000)
    model = NystroemKernelRidge(**KERNEL_DEFAULTS, n_components=100, chunk_rows=1_000)
    tracemalloc.start()
    try:
        model.fit(rows, target)
        model.predict(rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a chunk's kernel and features (2 x 1,000 x 100 floats) and the predictions (20,000 floats), with slack
    assert peak < 8 * (4 * 1_000 * 100 + 2 * 20_000 + 2 * 100 * 100)
    assert peak < 8 * 20_000 * 100 / 4  # well under even one rows x landmarks matrix


def test_the_yaml_picks_the_model_family_and_refuses_an_unknown_one(tmp_path) -> None:
    spec = table_spec(family="xgboost")
    frame, fresh = table(400), table(100, seed=2)
    pipeline = fitted(spec, frame)
    assert list(members(pipeline)) == ["xgboost"] and isinstance(members(pipeline)["xgboost"], XGBRegressor)
    compiled = compile_pipeline(pipeline, spec.features)
    np.testing.assert_allclose(compiled.predict(rows_of(spec, fresh)), pipeline.predict(fresh[spec.features]), rtol=1e-6)
    per_input, _, base, log_price = compiled.explain(rows_of(spec, fresh)[0])
    assert "kernel_ridge" not in per_input and base + sum(per_input.values()) == pytest.approx(log_price, abs=1e-6)
    assert list(members(fitted(table_spec(), frame))) == ["kernel_ridge", "xgboost"]  # the default: the blend
    path = tmp_path / "flats.yaml"
    path.write_text("name: flats\ntarget: price\nnumeric: {size_m2: {}}\nmodel: {family: forest}\n")
    with pytest.raises(DatasetError, match=r"model\.family"):
        load_dataset(path)


def test_an_ordered_category_with_spaces_is_scored_in_its_yaml_order() -> None:
    spec = table_spec()
    assert ordered_scales(spec) == {"grade": {"Poor": 1.0, "Fair": 2.0, "Good": 3.0, "Very Good": 4.0, "Excellent": 5.0}}
    scored = OrderedScores(ordered_scales(spec)).fit(pd.DataFrame({"grade": ["Poor"]}))
    values = pd.DataFrame({"grade": ["Very Good", "Excellent", "No_Grade", None]})
    assert scored.transform(values)["grade"].tolist() == [4.0, 5.0, 0.0, 0.0]
    frame = table(500)
    pipeline = fitted(spec, frame)
    encoded = pipeline[:-1].transform(frame[spec.features])
    by_grade = encoded.groupby(frame["grade"])["quality__grade"].first()
    assert by_grade.sort_values().index.tolist() == GRADES  # "Very Good" sits between Good and Excellent
    fresh = table(80, seed=3)
    fresh.loc[:9, "grade"] = "Not a grade"
    compiled = compile_pipeline(pipeline, spec.features)
    np.testing.assert_allclose(compiled.predict(rows_of(spec, fresh)), pipeline.predict(fresh[spec.features]), rtol=1e-6)


def test_ames_ordered_categories_come_from_its_yaml_with_the_former_grade_scores(settings: Settings) -> None:
    scales = ordered_scales(load_dataset(settings.dataset))
    five = {"Poor": 2, "Fair": 3, "Typical": 5, "Good": 7, "Excellent": 9}
    assert scales == {
        "overall_cond": {"Very_Poor": 1, "Poor": 2, "Fair": 3, "Below_Average": 4, "Average": 5, "Above_Average": 6,
                         "Good": 7, "Very_Good": 8, "Excellent": 9},
        **{column: five for column in ("exter_cond", "bsmt_cond", "heating_qc", "garage_cond", "pool_qc")},
    }  # fmt: skip


def test_the_area_test_checks_the_constrained_trees_not_the_kernel_ridge_that_cannot_be_constrained() -> None:
    """Price falls with size in this table: the kernel ridge learns it, the monotone trees cannot."""
    frame, probe = table(500, area_slope=-0.8), table(60, seed=6, area_slope=-0.8)
    spec = table_spec()
    blend = fitted(spec, frame)
    bigger = probe.assign(size_m2=probe["size_m2"] * 1.5)
    assert (blend.predict(bigger[spec.features]) < blend.predict(probe[spec.features])).any()  # the blend as a whole drops
    assert behaviour_failures(blend, spec, probe) == []  # what is constrained holds

    whole = table_spec(area_monotone="blend")
    monotone = fitted(whole, frame)
    assert "numeric__size_m2" not in members(monotone)["kernel_ridge"].feature_names_in_
    assert (monotone.predict(bigger[whole.features]) >= monotone.predict(probe[whole.features]) - 1e-6).all()
    assert behaviour_failures(monotone, whole, probe) == []


def test_a_model_that_prices_a_larger_area_lower_is_told_what_to_do() -> None:
    spec = table_spec()
    frame, probe = table(400, area_slope=-1.0), table(50, seed=7, area_slope=-1.0)
    ridge = build_ridge_baseline(spec).fit(frame[spec.features], frame[spec.target])
    failures = behaviour_failures(ridge, spec, probe)
    assert len(failures) == 1 and failures[0].startswith("a larger size_m2 lowers the price of")
    assert "in the model; what you can do:" in failures[0]
    assert "model.family" in failures[0] and "remove area_column from the data set YAML" in failures[0]
