"""scikit-learn's rules for the model's own estimators: the library's estimator checks, and an unfitted blend
that decides everything that depends on the training rows when it is fitted."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_global_output_transform_pandas,
    check_set_output_transform,
    check_set_output_transform_pandas,
    check_transformer_get_feature_names_out,
    check_transformer_get_feature_names_out_pandas,
    parametrize_with_checks,
)

from price_platform.datasets import DatasetSpec
from price_platform.modeling import (
    KERNEL_DEFAULTS,
    BandedTargetRegressor,
    BoundedKernelRidge,
    DerivedFeatures,
    EncodedColumns,
    ExactOrNystroemKernelRidge,
    NystroemKernelRidge,
    build_blend_pipeline,
)

# OrderedScores is not here: it scores named categorical columns by their YAML order, and the checks' tables
# are unnamed numeric arrays (every check would fail on "no order given"); the tests of training on any
# table check it on a frame.
ESTIMATORS = [
    DerivedFeatures(),
    EncodedColumns(),
    EncodedColumns(pattern="^x[02]"),  # a selection of an array's columns, named x0, x1, ...
    BandedTargetRegressor(),
    BoundedKernelRidge(kernel="polynomial", **KERNEL_DEFAULTS),
    NystroemKernelRidge(**KERNEL_DEFAULTS, n_components=20),
    ExactOrNystroemKernelRidge(**KERNEL_DEFAULTS),  # the checks' tables are small: the exact kind
    ExactOrNystroemKernelRidge(**KERNEL_DEFAULTS, exact_rows=5, n_components=20),  # the Nystroem kind
]


@parametrize_with_checks(ESTIMATORS)
def test_the_estimator_follows_scikit_learns_rules(estimator, check) -> None:
    check(estimator)


OUTPUT_CHECKS = [
    check_transformer_get_feature_names_out,
    check_transformer_get_feature_names_out_pandas,
    check_set_output_transform,
    check_set_output_transform_pandas,
    check_global_output_transform_pandas,
]


@pytest.mark.parametrize(
    ("transformer", "check"),
    [(DerivedFeatures(), check) for check in OUTPUT_CHECKS]
    # DerivedFeatures is not held to check_dataframe_column_names_consistency: like ColumnTransformer it reads
    # a frame's columns by name and lets extra or reordered columns through (an unused column must not change
    # the answer, training.behaviour); a missing column is refused (the test below)
    + [(EncodedColumns(pattern="^x[02]"), check) for check in [*OUTPUT_CHECKS, check_dataframe_column_names_consistency]],
    ids=lambda value: getattr(value, "__name__", type(value).__name__),
)
def test_the_transformer_names_its_output_as_scikit_learn_asks(transformer, check) -> None:
    """The checks of feature names and set_output that parametrize_with_checks does not run."""
    check(type(transformer).__name__, transformer)


def flats(rows: int, seed: int = 0) -> pd.DataFrame:
    """Flats with a size, a room count and a district; price grows with the size."""
    generator = np.random.default_rng(seed)
    rooms = generator.integers(1, 7, rows)
    size = rooms * generator.uniform(15, 35, rows)
    district = generator.choice(["north", "south"], rows)
    return pd.DataFrame({"size_m2": size, "rooms": rooms, "district": district, "price": 2000 * size * generator.uniform(0.9, 1.1, rows)})


def flats_spec() -> DatasetSpec:
    return DatasetSpec.model_validate({
        "name": "flats", "target": "price",
        "numeric": {"size_m2": {}, "rooms": {}},
        "categorical": {"district": {"allowed": ["north", "south"]}},
        "derived": {"size_per_room": "size_m2 / rooms"},
        "model": {"exact_kernel_rows": 300, "kernel_components": 50},
    })  # fmt: skip


def test_derived_features_on_a_frame_name_their_columns_survive_pickling_and_let_extra_columns_through() -> None:
    frame = flats(20)[["size_m2", "rooms", "district"]]
    derive = DerivedFeatures({"size_per_room": "size_m2 / rooms"})
    with pytest.raises(NotFittedError):
        derive.transform(frame)
    derive.fit(frame)
    assert list(derive.get_feature_names_out()) == ["size_m2", "rooms", "district", "size_per_room"]
    restored = pickle.loads(pickle.dumps(derive))
    pd.testing.assert_frame_equal(restored.transform(frame), derive.transform(frame))
    np.testing.assert_allclose(derive.transform(frame)["size_per_room"], frame["size_m2"] / frame["rooms"])
    assert "functions_" in derive.__dict__  # pickling leaves the fitted object as it was
    extra = derive.transform(frame.assign(note="x"))
    pd.testing.assert_frame_equal(extra.drop(columns="note"), derive.transform(frame))
    with pytest.raises(ValueError, match="columns are missing"):
        derive.transform(frame.drop(columns="rooms"))
    with pytest.raises(ValueError, match="must be a DataFrame"):
        DerivedFeatures({"size_per_room": "size_m2 / rooms"}).fit(frame[["size_m2", "rooms"]].to_numpy())


def test_the_blend_is_built_without_data_and_decides_its_columns_and_kernel_when_fitted() -> None:
    spec = flats_spec()
    unfitted = build_blend_pipeline(spec, {"n_estimators": 10})
    with pytest.raises(NotFittedError):
        unfitted.predict(flats(5)[spec.features])
    fitted = {}
    for rows in (300, 301):
        frame = flats(rows)
        # skewed sizes on the larger table only: the logged columns come from the rows it is fitted on
        frame["size_m2"] = frame["size_m2"] ** 3 if rows == 301 else frame["size_m2"]
        fitted[rows] = clone(unfitted).fit(frame[spec.features], frame[spec.target])
    logged = {rows: {name: columns for name, _, columns in p.named_steps["encode"].transformers_}["log"] for rows, p in fitted.items()}
    assert "size_m2" not in logged[300] and "size_m2" in logged[301]
    kinds = {rows: type(p.named_steps["model"].regressor_.estimators_[0].steps[-1][1].estimator_).__name__ for rows, p in fitted.items()}
    assert kinds == {300: "BoundedKernelRidge", 301: "NystroemKernelRidge"}
    assert not hasattr(unfitted.named_steps["encode"], "transformers_")  # fitting clones left the built pipeline as it was
