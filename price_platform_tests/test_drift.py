"""Drift statistics: agreement with scipy, decisions on the Ames sample, bad input, storage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from price_platform.datasets import load_dataset
from price_platform.modeling import read_sample
from price_platform.monitoring import reports
from price_platform.monitoring.drift import (
    SKETCH_POINTS,
    CategoricalReference,
    DriftInputError,
    NumericReference,
    Reference,
    categorical_drift,
    compare,
    ks_statistic,
    numeric_drift,
)
from price_platform.settings import DEFAULT_DATASET

AREAS = ["gr_liv_area", "first_flr_sf", "second_flr_sf", "total_bsmt_sf", "lot_area", "garage_area", "bsmt_unf_sf"]


@pytest.fixture(scope="module")
def spec():
    return load_dataset(DEFAULT_DATASET)


@pytest.fixture(scope="module")
def sample(spec):
    return read_sample(spec)


def thresholds() -> reports.Thresholds:
    return reports.Thresholds(psi=0.2, share=0.3)


@pytest.mark.parametrize("size", [(40, 70), (3000, 2500), (30_000, 20_000)])
def test_ks_statistic_equals_scipy_including_ties(size):
    rng = np.random.default_rng(size[0])
    reference = np.round(rng.normal(0, 3, size[0]))  # rounded: many ties
    current = np.round(rng.normal(0.4, 3, size[1]))
    statistic, p_value = ks_statistic(NumericReference.from_values(reference), np.sort(current))
    expected = stats.ks_2samp(reference, current, method="asymp")
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=0.05, abs=1e-6)


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.5])
def test_ks_statistic_on_a_quantile_sketch_is_within_one_sketch_step_of_scipy(shift):
    rng = np.random.default_rng(7)
    reference = rng.lognormal(7, 0.5, 50_000)  # continuous: far more distinct values than sketch points
    current = rng.lognormal(7 + shift, 0.5, 20_000)
    sketch = NumericReference.from_values(reference)
    assert sketch.points.size < 2 * SKETCH_POINTS and sketch.rows == reference.size
    statistic, _ = ks_statistic(sketch, np.sort(current))
    expected = stats.ks_2samp(reference, current).statistic
    assert statistic <= expected + 1e-12
    assert statistic >= expected - 1.0 / SKETCH_POINTS


def test_numeric_psi_is_zero_on_the_same_sample_and_large_on_a_shift():
    rng = np.random.default_rng(1)
    values = rng.lognormal(7, 0.4, 5000)
    reference = NumericReference.from_values(values)
    assert numeric_drift(reference, values)["psi"] == pytest.approx(0.0, abs=1e-12)
    shifted = numeric_drift(reference, values * 1.5)
    assert shifted["psi"] > 0.5 and shifted["ks"] > 0.3 and shifted["ks_p"] < 1e-6


def test_numeric_drift_skips_nans_and_reports_nothing_for_an_empty_batch():
    reference = NumericReference.from_values(np.array([1.0, 2.0, np.nan, 3.0]))
    assert reference.points.tolist() == [1.0, 2.0, 3.0] and reference.rows == 3
    assert numeric_drift(reference, np.array([np.nan, np.nan])) == {
        "psi": None, "ks": None, "ks_p": None, "current_rows": 0
    }


def test_categorical_statistics_equal_scipy_and_count_unseen_categories():
    reference = pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    current = pd.Series(["a"] * 20 + ["b"] * 30 + ["c"] * 40 + ["new"] * 10 + [None] * 5)
    found = categorical_drift(CategoricalReference.from_values(reference), current)
    p = np.array([50, 30, 20, 0]) / 100
    q = np.array([20, 30, 40, 10]) / 100
    assert found["js"] == pytest.approx(jensenshannon(p, q, base=2))
    table = np.array([[50, 30, 20, 0], [20, 30, 40, 10]])
    assert found["chi2_p"] == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    assert found["psi"] > 0.2


def test_an_unshifted_month_does_not_drift(spec, sample):
    reference = sample[sample["year_sold"] <= 2008]
    current = sample[(sample["year_sold"] == 2009) & (sample["mo_sold"] == 6)]
    report = reports.measure(
        spec, reference, current, partition_key="2009-06-01", model_version="1", thresholds=thresholds()
    )
    assert len(report.features) == len(spec.features)
    assert not report.target_drifted
    assert report.drifted_share < 0.3
    assert not report.drift_detected


def test_a_month_with_moved_prices_and_areas_drifts(spec, sample):
    reference = sample[sample["year_sold"] <= 2008]
    current = sample[(sample["year_sold"] == 2009) & (sample["mo_sold"] == 6)].copy()
    for column in AREAS:
        current[column] = current[column] * 1.6
    current[spec.target] = current[spec.target] * 1.8
    report = reports.measure(
        spec, reference, current, partition_key="2009-06-01", model_version="1", thresholds=thresholds()
    )
    drifted = set(report.features.loc[report.features["drifted"], "feature"])
    assert {"gr_liv_area", "first_flr_sf", "total_bsmt_sf"} <= drifted
    assert report.target_drifted
    assert report.drift_detected
    assert report.top(3)["drifted"].all()
    assert "| gr_liv_area |" in report.markdown(20)
    assert report.plot_png().startswith(b"\x89PNG")


def test_a_batch_missing_columns_is_refused_with_their_names(spec, sample):
    reference = Reference.from_frame(sample, spec.numeric, spec.categorical)
    with pytest.raises(DriftInputError, match=r"lacks the reference's columns \['gr_liv_area', 'neighborhood'\]"):
        compare(reference, sample.drop(columns=["gr_liv_area", "neighborhood"]), psi_threshold=0.2)
    with pytest.raises(DriftInputError, match=r"the reference lacks the columns \['lot_area'\]"):
        Reference.from_frame(sample.drop(columns=["lot_area"]), spec.numeric, spec.categorical)


def test_strings_in_a_numeric_column_count_as_missing_not_as_numbers(spec, sample):
    reference = Reference.from_frame(sample, ["gr_liv_area"], [])
    current = pd.DataFrame({"gr_liv_area": ["big", "1500", None, 1400]})
    row = compare(reference, current, psi_threshold=0.2).iloc[0]
    assert row["current_rows"] == 2


def test_reports_are_stored_with_one_row_per_feature_and_a_summary(spec, sample, postgres):
    from price_platform.warehouse import connect

    reference = sample[sample["year_sold"] <= 2008]
    current = sample[(sample["year_sold"] == 2009) & (sample["mo_sold"] == 7)]
    report = reports.measure(
        spec, reference, current, partition_key="2009-07-01", model_version="3", thresholds=thresholds()
    )
    with connect(postgres.dsn()) as connection:
        reports.save(connection, report, run_id="run-1")
    with connect(postgres.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*), count(*) filter (where kind = 'target') from monitoring.drift_reports"
                       " where report_id = %s", (str(report.report_id),))
        assert cursor.fetchone() == (len(spec.features) + 1, 1)
        cursor.execute("select features_checked, drift_detected, model_version from monitoring.drift_summaries"
                       " where report_id = %s", (str(report.report_id),))
        assert cursor.fetchone() == (len(spec.features), report.drift_detected, "3")


def test_a_report_from_stored_reference_statistics_equals_one_from_the_frame(spec, sample, postgres):
    from price_platform.monitoring import reference_store
    from price_platform.warehouse import connect

    reference = sample[sample["year_sold"] <= 2008]
    current = sample[(sample["year_sold"] == 2009) & (sample["mo_sold"] == 8)].copy()
    current[spec.target] = current[spec.target] * 1.5
    direct = reports.measure(spec, reference, current, partition_key="2009-08-01", model_version="4",
                             thresholds=thresholds())
    built = []

    def summarise():
        built.append(True)
        return reports.prepare(spec, reference), {"kind": "test"}

    key = reference_store.reference_key("4", "2006-01-01 .. 2008-12-01", "test-loads", spec.features)
    for _ in range(2):  # the second call reads what the first stored
        with connect(postgres.dsn()) as connection:
            stored, multivariate, _ = reference_store.load_or_build(
                connection, key, summarise, model_version="4", window_label="2006-01-01 .. 2008-12-01"
            )
    assert built == [True] and multivariate == {"kind": "test"}
    assert list(stored.numeric) == list(spec.numeric) and list(stored.categorical) == list(spec.categorical)
    again = reports.measure(spec, stored, current, partition_key="2009-08-01", model_version="4",
                            thresholds=thresholds())
    pd.testing.assert_frame_equal(again.features, direct.features)
    assert again.target == direct.target and again.target_drifted
    assert again.reference_rows == direct.reference_rows == len(reference)


# --- multivariate drift (PCA reconstruction error) ----------------------------------------


def correlated(rows: int, seed: int, *, broken: bool = False) -> pd.DataFrame:
    """Two numeric columns that move together and a categorical that follows them; ``broken`` unties them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, rows)
    y = x + rng.normal(0, 0.2, rows)
    if broken:
        y = rng.permutation(y)  # same marginal distribution, relation gone
    kind = np.where(x > 0, "high", "low")
    return pd.DataFrame({"x": x, "y": y, "kind": kind})


def test_multivariate_drift_sees_a_broken_relation_the_per_feature_report_misses():
    from price_platform.monitoring.multivariate import ReconstructionModel

    reference = correlated(5000, 1)
    model = ReconstructionModel.fit(reference, ["x", "y"], ["kind"])
    assert len(model.components) < 3
    same = model.measure(correlated(400, 2))
    broken = model.measure(correlated(400, 3, broken=True))
    assert not same["drifted"] and same["error"] < same["threshold"]
    assert broken["drifted"] and broken["error"] > 1.5 * broken["threshold"]
    per_feature = compare(Reference.from_frame(reference, ["x", "y"], ["kind"]), correlated(400, 3, broken=True),
                          psi_threshold=0.2)
    assert not per_feature["drifted"].any()


def test_the_multivariate_threshold_widens_for_small_batches_and_survives_storage_as_json():
    import json

    from price_platform.monitoring.multivariate import ReconstructionModel

    model = ReconstructionModel.fit(correlated(3000, 4), ["x", "y"], ["kind"])
    assert model.threshold(50) > model.threshold(5000) > model.reference_error
    again = ReconstructionModel.from_dict(json.loads(json.dumps(model.to_dict())))
    batch = correlated(300, 5).assign(kind=["unseen"] * 300)  # an unseen category encodes as frequency 0
    np.testing.assert_allclose(again.row_errors(batch), model.row_errors(batch))
    with pytest.raises(ValueError, match="the reference has 10 rows; a multivariate model needs 20"):
        ReconstructionModel.fit(correlated(10, 6), ["x", "y"], ["kind"])


def test_a_report_measures_multivariate_drift_and_stores_it_in_the_summary(spec, sample, postgres):
    from price_platform.warehouse import connect

    reference = sample[sample["year_sold"] <= 2008]
    current = sample[(sample["year_sold"] == 2009) & (sample["mo_sold"] == 9)]
    model = reports.fit_multivariate(spec, reference)
    report = reports.measure(spec, reference, current, partition_key="2009-09-01", model_version="3",
                             thresholds=thresholds(), multivariate=model)
    assert report.multivariate["rows"] == len(current)
    assert report.markdown().startswith("multivariate (PCA reconstruction error")
    with connect(postgres.dsn()) as connection:
        reports.save(connection, report)
    with connect(postgres.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("select multivariate_error, multivariate_threshold, multivariate_drifted"
                       " from monitoring.drift_summaries where report_id = %s", (str(report.report_id),))
        assert cursor.fetchone() == pytest.approx(
            (report.multivariate["error"], report.multivariate["threshold"], report.multivariate_drifted)
        )
