"""Training: the time-ordered split, the data version, conformal intervals, behaviour tests, the Optuna study."""

from __future__ import annotations

import math
import multiprocessing
import uuid

import numpy as np
import optuna
import pytest

from price_platform.datasets import load_dataset
from price_platform.modeling import build_blend_pipeline, build_ridge_baseline
from price_platform.registry.promotion import Verdict
from price_platform.settings import Settings
from price_platform.testing import sample_features
from price_platform.training.behaviour import behaviour_failures
from price_platform.training.dataset import TrainingDataError, data_version, split, without_area_outliers
from price_platform.training.evaluation import Evaluation
from price_platform.training.metrics import (
    conformal_halfwidth,
    interval_coverage,
    regression_metrics,
)
from price_platform.training.study import MAX_KERNEL_WEIGHT, StudyInputs, run_study

FAST = {"n_estimators": 60, "learning_rate": 0.1}


@pytest.fixture(scope="module")
def spec(settings: Settings):
    return load_dataset(settings.dataset)


@pytest.fixture(scope="module")
def features(spec):
    return sample_features(spec)


@pytest.fixture(scope="module")
def windows(spec, features):
    return split(features, spec, holdout_months=12, validation_months=6, seed=42)


def test_split_is_by_sale_month_with_the_last_months_as_holdout(windows) -> None:
    assert windows.window("holdout") == ("2009-08-01", "2010-07-01")
    assert windows.window("validation") == ("2009-02-01", "2009-07-01")
    assert windows.window("train")[1] < windows.window("validation")[0]
    assert len(windows.holdout) == 559
    assert len(windows.train) + len(windows.validation) + len(windows.holdout) == 2930


def test_data_version_changes_with_one_price_and_with_the_manifest(spec, features) -> None:
    base = data_version(features, spec, "manifest-a")
    assert data_version(features.sample(frac=1, random_state=1), spec, "manifest-a") == base
    changed = features.copy()
    changed.loc[0, spec.target] += 1
    assert data_version(changed, spec, "manifest-a") != base
    assert data_version(features, spec, "manifest-b") != base


def test_split_without_time_is_random_but_seeded(spec, features) -> None:
    timeless = spec.model_copy(update={"time": None})
    first = split(features, timeless, holdout_months=12, validation_months=6, seed=7)
    again = split(features, timeless, holdout_months=12, validation_months=6, seed=7)
    assert first.holdout["record_id"].tolist() == again.holdout["record_id"].tolist()
    assert 0.1 < len(first.holdout) / len(features) < 0.3


def test_features_too_short_for_the_windows_are_refused(spec, features) -> None:
    short = features[features["partition_key"] >= "2010-01-01"]
    with pytest.raises(TrainingDataError, match="window\\(s\\) train would be empty"):
        split(short, spec, holdout_months=6, validation_months=1, seed=0)
    with pytest.raises(TrainingDataError, match="has no rows"):
        split(features.head(0), spec, holdout_months=12, validation_months=6, seed=0)
    broken = features.copy()
    broken.loc[[3, 5], spec.target] = [0.0, np.nan]
    with pytest.raises(TrainingDataError, match="2 rows have a missing or non-positive sale_price"):
        split(broken, spec, holdout_months=12, validation_months=6, seed=0)


def test_fits_leave_out_the_five_sales_over_4000_square_feet_and_keep_every_other_row(spec, features) -> None:
    kept = without_area_outliers(features, spec)
    dropped = features[~features["record_id"].isin(kept["record_id"])]
    # De Cock's cut: three partial sales of unfinished mansions at 160-185k and two genuine mansions.
    assert sorted(dropped["record_id"]) == ["1499", "1761", "1768", "2181", "2182"]
    assert sorted(dropped[spec.area_column]) == [4316, 4476, 4676, 5095, 5642]
    assert kept["record_id"].tolist() == features["record_id"][~features["record_id"].isin(dropped["record_id"])].tolist()
    assert kept[spec.area_column].max() == 3820  # the largest house under the cut stays
    edge = features.head(4).assign(**{spec.area_column: [np.nan, 4000.0, 4000.5, 1200.0]})
    assert without_area_outliers(edge, spec)["record_id"].tolist() == edge["record_id"].iloc[[0, 1, 3]].tolist()
    no_area = spec.model_copy(update={"outliers": []})
    assert without_area_outliers(features, no_area)["record_id"].tolist() == features["record_id"].tolist()


def test_conformal_interval_covers_its_share_of_fresh_residuals() -> None:
    rng = np.random.default_rng(3)
    predicted = rng.uniform(1e5, 3e5, 4000)
    actual = predicted * np.exp(rng.normal(0, 0.12, 4000))
    q = conformal_halfwidth(actual[:2000], predicted[:2000], 0.9)
    assert q == pytest.approx(0.12 * 1.645, rel=0.08)
    assert interval_coverage(actual[2000:], predicted[2000:], q) == pytest.approx(0.9, abs=0.02)
    assert regression_metrics(actual, actual)["rmsle"] == 0.0


@pytest.fixture(scope="module")
def blend(spec, windows):
    return build_blend_pipeline(spec, FAST).fit(windows.train[spec.features], windows.train[spec.target])


def test_blend_beats_the_ridge_baseline_and_behaves(spec, windows, blend) -> None:
    ridge = build_ridge_baseline(spec).fit(windows.train[spec.features], windows.train[spec.target])
    actual = windows.holdout[spec.target].to_numpy(float)
    blend_rmsle = regression_metrics(actual, blend.predict(windows.holdout[spec.features]))["rmsle"]
    ridge_rmsle = regression_metrics(actual, ridge.predict(windows.holdout[spec.features]))["rmsle"]
    assert blend_rmsle < ridge_rmsle
    assert behaviour_failures(blend, spec, windows.holdout.head(100)) == []


def test_larger_living_area_does_not_lower_the_price(spec, windows, blend) -> None:
    rows = windows.holdout[spec.features].head(50).reset_index(drop=True)
    bigger = rows.assign(gr_liv_area=rows["gr_liv_area"] * 1.3)
    assert (blend.predict(bigger) >= blend.predict(rows) - 1e-6).all()


def test_an_unused_column_does_not_change_the_answer(spec, windows, blend) -> None:
    rows = windows.holdout[spec.features].head(50)
    noisy = rows.assign(listing_note=[f"note {i}" for i in range(len(rows))], agent_id=np.arange(len(rows)))
    np.testing.assert_array_equal(blend.predict(noisy), blend.predict(rows))


def test_behaviour_check_catches_a_model_that_prices_area_backwards(spec, windows) -> None:
    train = windows.train.assign(**{spec.target: 1e8 / windows.train["gr_liv_area"]})
    backwards = build_ridge_baseline(spec).fit(train[spec.features], train[spec.target])
    failures = behaviour_failures(backwards, spec, windows.holdout.head(50))
    assert len(failures) == 1 and failures[0].startswith("a larger gr_liv_area lowers the price of")


def test_gate_refuses_nan_metrics_misbehaviour_and_a_worse_challenger() -> None:
    good = {"rmsle": 0.13, "rmse": 1.0}
    assert Evaluation("2", None, good, None, segments=None).verdict(0.0) == Verdict(
        True, "no champion yet; challenger holdout RMSLE 0.13000", {"challenger_rmsle": 0.13, "challenger_rmse": 1.0}
    )
    assert not Evaluation("2", "1", {"rmsle": math.nan}, {"rmsle": 0.2}, segments=None).verdict(0.0).passed
    assert not Evaluation("2", "1", good, {"rmsle": 0.12}, segments=None).verdict(0.0).passed
    assert not Evaluation("2", "1", good, {"rmsle": 0.131}, segments=None).verdict(0.05).passed
    assert Evaluation("2", "1", good, {"rmsle": 0.14}, segments=None).verdict(0.05).passed
    refused = Evaluation("2", "1", good, {"rmsle": 0.2}, segments=None, behaviour_failures=["x lowers y"]).verdict(0.0)
    assert not refused.passed and "behaviour tests failed: x lowers y" in refused.reason


def _worker(storage_url: str, study_name: str, worker: int, dataset_path: str) -> None:
    spec = load_dataset(dataset_path)
    data = split(sample_features(spec), spec, holdout_months=12, validation_months=6, seed=42)
    run_study(spec, data, storage_url=storage_url, study_name=study_name, n_trials=2, timeout=600, worker=worker, rounds=100)


def test_two_worker_processes_add_trials_to_one_postgres_study(postgres, settings) -> None:
    storage_url = postgres.url("optuna")
    name = f"study-{uuid.uuid4().hex[:6]}"
    optuna.create_study(study_name=name, storage=storage_url)  # tables and study exist before the race
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(storage_url, name, i, str(settings.dataset))) for i in (1, 2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(600)
    assert [p.exitcode for p in workers] == [0, 0]
    trials = optuna.load_study(study_name=name, storage=storage_url).get_trials()
    assert len(trials) == 4
    assert sorted(t.user_attrs["worker"] for t in trials) == [1, 1, 2, 2]
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)


def test_study_is_seeded_and_reports_its_best_round_count(postgres, spec, windows) -> None:
    storage_url = postgres.url("optuna")
    runs = [
        run_study(spec, windows, storage_url=storage_url, study_name=f"seeded-{uuid.uuid4().hex[:6]}", n_trials=3,
                  timeout=600, seed=5, rounds=100, pruning=False)
        for _ in range(2)
    ]
    assert runs[0].history["learning_rate"].tolist() == runs[1].history["learning_rate"].tolist()
    assert runs[0].best_value == pytest.approx(runs[1].best_value)
    assert 0 < runs[0].best_params["n_estimators"] <= 100


def test_study_scores_the_blend_the_candidate_fits_with_its_best_settings(postgres, spec, windows) -> None:
    result = run_study(spec, windows, storage_url=postgres.url("optuna"), study_name=f"blend-{uuid.uuid4().hex[:6]}",
                       n_trials=2, timeout=600, seed=5, rounds=120, pruning=False)  # fmt: skip
    rows = without_area_outliers(windows.train, spec)
    blend = build_blend_pipeline(spec, result.best_params, seed=5, kernel_weight=result.kernel_weight)
    blend.fit(rows[spec.features], rows[spec.target])
    actual = windows.validation[spec.target].to_numpy(float)
    rmsle = regression_metrics(actual, blend.predict(windows.validation[spec.features]))["rmsle"]
    assert 0.0 < result.kernel_weight <= MAX_KERNEL_WEIGHT
    assert result.best_value == pytest.approx(rmsle, rel=1e-5)


def _validation_blend(kernel: np.ndarray | None, label: np.ndarray) -> StudyInputs:
    return StudyInputs(booster_params={}, train=None, validation=None, kernel_validation=kernel, validation_label=label)


def test_the_study_gives_the_kernel_ridge_the_share_that_fits_the_validation_rows_best() -> None:
    rng = np.random.default_rng(3)
    label = rng.normal(12.0, 0.4, 500)
    trees = label + rng.normal(0.0, 0.10, 500)
    kernel = label + rng.normal(0.0, 0.15, 500)
    weight, score = _validation_blend(kernel, label).blend(trees)
    grid = np.linspace(0.0, 1.0, 10_001)
    errors = [np.sqrt(np.mean((label - (w * kernel + (1 - w) * trees)) ** 2)) for w in grid]
    assert weight == pytest.approx(grid[int(np.argmin(errors))], abs=1e-3)
    assert score == pytest.approx(min(errors), rel=1e-6)
    assert 0.2 < weight < 0.5  # independent errors: the share goes to the member with the smaller variance
    # a kernel ridge that is exact still leaves the trees their tenth; one that is wrong gets no share
    assert _validation_blend(label.copy(), label).blend(trees)[0] == MAX_KERNEL_WEIGHT
    assert _validation_blend(2 * trees - label, label).blend(trees)[0] == 0.0
    assert _validation_blend(None, label).blend(trees) == (0.0, pytest.approx(np.sqrt(np.mean((label - trees) ** 2))))


def test_a_blend_without_the_kernel_ridges_share_is_the_trees_alone_and_a_whole_share_is_refused(spec) -> None:
    trees_alone = build_blend_pipeline(spec, FAST, kernel_weight=0.0).named_steps["model"].regressor
    assert [name for name, _ in trees_alone.estimators] == ["xgboost"]
    weighted = build_blend_pipeline(spec, FAST, kernel_weight=0.25).named_steps["model"].regressor
    assert weighted.weights == [0.25, 0.75]
    with pytest.raises(ValueError, match=r"kernel_weight must be in \[0, 1\): the trees keep a share of the vote, got 1.0"):
        build_blend_pipeline(spec, FAST, kernel_weight=1.0)
