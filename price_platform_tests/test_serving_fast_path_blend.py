"""The compiled blend (kernel ridge + XGBoost) agrees with ``pipeline.predict``, explains itself, and falls back when it cannot."""

from __future__ import annotations

import ast
import copy
import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import OrdinalEncoder
from test_serving_support import split

import serving.blend
import serving.fast_path
from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.modeling import _group_columns, build_blend_pipeline, read_sample
from price_platform.settings import Settings
from serving.blend import HELPER_PLACEMENT, KERNEL_TERM, MEMBERS_THREAD, SPLIT_ROWS, CompiledBlend, QuadraticForm
from serving.fast_path import (
    NotCompilable,
    PipelinePredictor,
    build_predictor,
    compile_pipeline,
)
from serving.model_store import prepare

TREES = 40


@pytest.fixture(scope="module")
def blend(settings: Settings) -> SimpleNamespace:
    """The default model's shape fitted on the sample's train window (few trees), and the holdout."""
    spec = load_dataset(settings.dataset)
    train, holdout = split(spec, read_sample(spec))
    pipeline = build_blend_pipeline(spec, {"n_estimators": TREES})
    pipeline.fit(train[spec.features], train[spec.target])
    return SimpleNamespace(spec=spec, pipeline=pipeline, train=train, holdout=holdout)


def rows_of(spec: DatasetSpec, frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Records as the API hands them to the predictor: feature order, missing values as None."""
    return list(frame[spec.features].astype(object).where(frame[spec.features].notna(), None).itertuples(index=False, name=None))


def worst_relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(got - expected) / np.abs(expected)))


def test_compiled_blend_agrees_with_the_pipeline_on_the_whole_holdout(blend: SimpleNamespace) -> None:
    compiled = compile_pipeline(blend.pipeline, blend.spec.features)
    assert isinstance(compiled, CompiledBlend) and compiled.fast
    assert isinstance(build_predictor(blend.pipeline, blend.spec.features), CompiledBlend)
    expected = blend.pipeline.predict(blend.holdout[blend.spec.features])
    rows = rows_of(blend.spec, blend.holdout)
    assert len(rows) == len(blend.holdout) > 100
    assert worst_relative(compiled.predict(rows), expected) < 1e-6
    assert worst_relative(np.array([compiled.predict([row])[0] for row in rows]), expected) < 1e-6


def test_a_large_batch_predicted_in_two_parts_by_two_threads_gives_every_record_its_own_price(blend: SimpleNamespace) -> None:
    compiled = compile_pipeline(blend.pipeline, blend.spec.features)
    frame = pd.concat([blend.holdout] * (SPLIT_ROWS // len(blend.holdout) + 1)).head(SPLIT_ROWS + 7)
    rows = rows_of(blend.spec, frame)
    expected = blend.pipeline.predict(frame[blend.spec.features])
    cut = compiled.split_at(len(rows))
    assert 0 < cut < len(rows) and max(cut, len(rows) - cut) < SPLIT_ROWS  # each part alone is priced by one thread
    both = compiled.predict(rows)  # the other thread prices rows[:cut]
    assert worst_relative(both, expected) < 1e-6
    np.testing.assert_array_equal(both, np.concatenate([compiled.predict(rows[:cut]), compiled.predict(rows[cut:])]))
    ratio = compiled.encode_over_members
    assert np.isfinite(ratio) and ratio > 0


def test_a_large_batch_is_priced_whole_when_the_other_thread_is_busy(blend: SimpleNamespace) -> None:
    """Another batch holds the members thread: this one does not wait for it but prices the first part itself."""
    compiled = compile_pipeline(blend.pipeline, blend.spec.features)
    frame = pd.concat([blend.holdout] * (SPLIT_ROWS // len(blend.holdout) + 1)).head(SPLIT_ROWS + 7)
    rows = rows_of(blend.spec, frame)
    release = threading.Event()
    busy = MEMBERS_THREAD.submit(release.wait, 60)
    try:
        prices = compiled.predict(rows)
        assert not busy.done()  # priced while the other thread was still held
    finally:
        release.set()
    assert busy.result() is True
    assert worst_relative(prices, blend.pipeline.predict(frame[blend.spec.features])) < 1e-6


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2, reason="Linux, 2+ CPUs")
def test_the_helper_thread_is_kept_off_the_cpu_of_the_thread_handing_it_work() -> None:
    MEMBERS_THREAD.submit(int).result()  # the helper has started and noted its id
    allowed = os.sched_getaffinity(0)
    assert HELPER_PLACEMENT.cpus == allowed
    try:
        for here in sorted(allowed)[:2]:
            os.sched_setaffinity(0, {here})  # this thread on one CPU
            HELPER_PLACEMENT.keep_off_this_cpu()
            assert os.sched_getaffinity(HELPER_PLACEMENT.thread_id) == allowed - {here}
    finally:
        os.sched_setaffinity(0, allowed)


def test_a_blend_whose_trees_read_ordinal_codes_still_compiles(blend: SimpleNamespace) -> None:
    """Champions registered before the trees read one-hot columns encode categories as ordinal codes."""
    spec = blend.spec
    pipeline = build_blend_pipeline(spec, {"n_estimators": TREES})
    codes = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
    pipeline.named_steps["encode"].transformers.append(("ordinal", codes, list(spec.categorical)))
    trees = dict(pipeline.named_steps["model"].regressor.estimators)["xgboost"]
    trees.set_params(columns=_group_columns(("numeric", "quality", "ordinal", "segment")))
    pipeline.fit(blend.train[spec.features], blend.train[spec.target])
    frame = blend.holdout.head(80).copy()
    frame.loc[frame.index[:10], "neighborhood"] = "Never_Seen_Before"
    frame.loc[frame.index[10:20], "bldg_type"] = None
    compiled = compile_pipeline(pipeline, spec.features)
    assert isinstance(compiled, CompiledBlend)
    assert any(name.startswith("ordinal__") for name in compiled.tree_names)
    assert worst_relative(compiled.predict(rows_of(spec, frame)), pipeline.predict(frame[spec.features])) < 1e-6


def test_compiled_encoder_matches_the_fitted_column_transformer(blend: SimpleNamespace) -> None:
    compiled = compile_pipeline(blend.pipeline, blend.spec.features)
    frame = blend.holdout[blend.spec.features]
    expected = blend.pipeline[:-1].transform(frame).to_numpy(dtype=np.float64)
    np.testing.assert_allclose(compiled.encode(rows_of(blend.spec, blend.holdout)), expected, rtol=1e-12, atol=1e-12)


def test_compiled_blend_agrees_on_missing_unseen_and_out_of_range_values(blend: SimpleNamespace) -> None:
    spec = blend.spec
    frame = blend.holdout.head(60).copy()
    quality = next(c for c in spec.categorical if c.endswith(("_qc", "_cond")))
    frame.loc[frame.index[:10], "mas_vnr_type"] = None
    frame.loc[frame.index[10:20], "neighborhood"] = "Never_Seen_Before"  # a segment: target mean; one-hot: zeros
    frame.loc[frame.index[20:30], "lot_frontage"] = np.nan  # imputed median, and log1p's own fill
    frame.loc[frame.index[30:40], quality] = "Not_A_Grade"  # grade score 0
    frame.loc[frame.index[40:50], "bldg_type"] = None
    frame.loc[frame.index[50:60], "lot_area"] = -5.0  # log1p of a negative size counts as 0
    compiled = compile_pipeline(blend.pipeline, spec.features)
    expected = blend.pipeline.predict(frame[spec.features])
    rows = rows_of(spec, frame)
    assert worst_relative(compiled.predict(rows), expected) < 1e-6
    assert worst_relative(np.array([compiled.predict([row])[0] for row in rows]), expected) < 1e-6


def test_voting_weights_are_applied(blend: SimpleNamespace) -> None:
    weighted = copy.deepcopy(blend.pipeline)
    weighted.named_steps["model"].regressor_.weights = [1.0, 3.0]
    frame = blend.holdout.head(50)
    expected = weighted.predict(frame[blend.spec.features])
    assert worst_relative(expected, blend.pipeline.predict(frame[blend.spec.features])) > 1e-4  # the weights matter
    compiled = compile_pipeline(weighted, blend.spec.features)
    assert worst_relative(compiled.predict(rows_of(blend.spec, frame)), expected) < 1e-6


@pytest.mark.parametrize("weights", [None, [1.0, 3.0]])
def test_explanation_adds_up_to_the_log_price_with_a_kernel_ridge_term(blend: SimpleNamespace, weights: list[float] | None) -> None:
    pipeline = copy.deepcopy(blend.pipeline)
    voting = pipeline.named_steps["model"].regressor_
    voting.weights = weights
    kernel_share = 0.5 if weights is None else weights[0] / sum(weights)
    compiled = compile_pipeline(pipeline, blend.spec.features)
    frame = blend.holdout.head(5)
    encoded = pipeline[:-1].transform(frame[blend.spec.features])
    kernel_log = voting.estimators_[0].predict(encoded)
    prices = pipeline.predict(frame[blend.spec.features])
    for index, row in enumerate(rows_of(blend.spec, frame)):
        per_input, per_column, base, log_price = compiled.explain(row)
        assert set(per_input) == {*blend.spec.features, KERNEL_TERM}
        assert per_input[KERNEL_TERM] == pytest.approx(kernel_share * kernel_log[index], rel=1e-9)
        assert per_column[KERNEL_TERM] == per_input[KERNEL_TERM]
        assert base + sum(per_input.values()) == pytest.approx(log_price, abs=1e-9)
        assert base + sum(per_column.values()) == pytest.approx(log_price, abs=1e-9)
        assert log_price == pytest.approx(np.log(prices[index]), abs=1e-5)  # SHAP values are float32 sums


def test_a_blend_it_cannot_reproduce_is_served_by_the_pipeline(blend: SimpleNamespace) -> None:
    other = copy.deepcopy(blend.pipeline)
    other.named_steps["model"].regressor_.estimators_[0].named_steps["regressor"].estimator_.kernel = "rbf"
    with pytest.raises(NotCompilable, match="rbf"):
        compile_pipeline(other, blend.spec.features)
    predictor = build_predictor(other, blend.spec.features)
    assert isinstance(predictor, PipelinePredictor) and not predictor.fast
    frame = blend.holdout.head(20)
    np.testing.assert_allclose(predictor.predict(rows_of(blend.spec, frame)), other.predict(frame[blend.spec.features]))


def test_the_model_store_serves_the_blend_through_the_compiled_path(blend: SimpleNamespace) -> None:
    loaded = SimpleNamespace(
        pipeline=blend.pipeline, interval_log_halfwidth=0.2, metrics={}, data_version="test", run_id="test"
    )
    rows = rows_of(blend.spec, blend.holdout.head(16))
    model = prepare("blend", "1", loaded=loaded, spec=blend.spec, rows=rows, threads=1)
    assert model.predictor.fast and model.explainable is model.predictor
    expected = blend.pipeline.predict(blend.holdout.head(16)[blend.spec.features])
    assert worst_relative(model.predict(rows), expected) < 1e-6


def test_the_quadratic_form_is_the_kernel_against_every_training_row(blend: SimpleNamespace) -> None:
    compiled = compile_pipeline(blend.pipeline, blend.spec.features)
    columns = compiled.encode(rows_of(blend.spec, blend.holdout))[:, compiled.kernel_columns]
    form = compiled.kernel.quadratic()
    by_rows = compiled.kernel.against_rows(columns)
    assert worst_relative(form(columns), by_rows) < 1e-9
    # one-hot blocks make the form singular: it keeps only the directions it has
    assert form.basis.shape == (len(compiled.kernel_columns), len(form.eigenvalues))
    assert len(form.eigenvalues) < len(compiled.kernel_columns)


def test_the_quadratic_form_keeps_every_direction_of_a_full_rank_matrix() -> None:
    generator = np.random.default_rng(0)
    square = generator.normal(size=(6, 6))
    matrix, linear = square + square.T, generator.normal(size=6)
    form = QuadraticForm.of(matrix, linear, 0.5)
    assert len(form.eigenvalues) == 6
    rows = generator.normal(size=(20, 6))
    expected = np.einsum("ij,jk,ik->i", rows, matrix, rows) + rows @ linear + 0.5
    assert worst_relative(form(rows), expected) < 1e-12
    assert np.allclose(QuadraticForm.of(np.zeros((6, 6)), linear, 0.5)(rows), rows @ linear + 0.5)


def test_a_kernel_of_another_degree_is_evaluated_against_the_training_rows(blend: SimpleNamespace) -> None:
    cubic = copy.deepcopy(blend.pipeline)
    cubic.named_steps["model"].regressor_.estimators_[0].named_steps["regressor"].estimator_.degree = 3
    compiled = compile_pipeline(cubic, blend.spec.features)
    assert compiled.kernel.quadratic() is None
    frame = blend.holdout.head(40)
    expected = cubic.predict(frame[blend.spec.features])
    assert worst_relative(expected, blend.pipeline.predict(frame[blend.spec.features])) > 1e-4  # the degree matters
    assert worst_relative(compiled.predict(rows_of(blend.spec, frame)), expected) < 1e-6


def test_the_members_composed_by_hand_give_the_prices_predict_gives(blend: SimpleNamespace) -> None:
    """``member_columns`` -> ``kernel_output`` + the booster -> ``blended``: what the compiler bench composes with other tree engines."""
    compiled = compile_pipeline(blend.pipeline, blend.spec.features)
    rows = rows_of(blend.spec, blend.holdout)
    for part in (rows[:1], rows[:5], rows):  # record by record and column-wise
        kernel_columns, tree_columns = compiled.member_columns(part)
        kernel, trees = compiled.member_outputs(kernel_columns, tree_columns)
        np.testing.assert_array_equal(kernel, compiled.kernel_output(kernel_columns))
        np.testing.assert_array_equal(compiled.blended(kernel, trees), compiled.predict(part))


def test_the_two_compilers_do_not_import_each_other() -> None:
    """``serving.compiled.compile_pipeline`` hands a pipeline to one of them; neither names the other."""
    def imported(module: Any) -> set[str]:
        tree = ast.parse(Path(module.__file__).read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        return names | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert "serving.fast_path" not in imported(serving.blend)
    assert "serving.blend" not in imported(serving.fast_path)
    assert {"serving.compiled"} <= imported(serving.blend) & imported(serving.fast_path)
    assert compile_pipeline is serving.fast_path.compile_pipeline  # the entry point, from serving.compiled
