"""The Optuna study is keyed by data and search version, and a rerun tops it up to the trial budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from test_features import own_warehouse

from price_platform.datasets import load_dataset
from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.resources import Dataset
from price_platform.defs.training.assets import hyperparameter_study
from price_platform.defs.training.resources import TrainingConfig
from price_platform.settings import Settings
from price_platform.training.dataset import split
from price_platform.training.study_versions import search_version, study_name, trials_to_add

LAMPS_YAML = """\
name: lamps
description: {description}
target: price
numeric:
  height: {{min: 0, max: 300}}
  watts: {{min: 0, max: 500}}
categorical:
  shade: {{allowed: [glass, paper]}}
{derived}"""


def lamps(tmp_path: Path, *, description: str = "lamps", derived: str = "") -> Path:
    path = tmp_path / f"lamps-{abs(hash((description, derived)))}.yaml"
    path.write_text(LAMPS_YAML.format(description=description, derived=derived))
    return path


def test_the_search_version_follows_the_description_and_the_rounds(tmp_path: Path) -> None:
    base = load_dataset(lamps(tmp_path))
    assert search_version(base, 100) == search_version(load_dataset(lamps(tmp_path)), 100)
    assert search_version(base, 100) == search_version(load_dataset(lamps(tmp_path, description="other")), 100)
    changed = load_dataset(lamps(tmp_path, derived="derived: {power_per_cm: watts / (height + 1)}\n"))
    assert search_version(changed, 100) != search_version(base, 100)
    assert search_version(base, 200) != search_version(base, 100)
    assert study_name("m", "data1", base, 100) != study_name("m", "data2", base, 100)


def test_trials_to_add_counts_the_studys_finished_trials(settings: Settings) -> None:
    with own_warehouse(settings, "study_count") as (_, warehouse):
        storage = warehouse.server.url("optuna")
        assert trials_to_add(storage, "absent", 5) == 5
        study = optuna.create_study(study_name="present", storage=storage)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
        assert trials_to_add(storage, "present", 5) == 2
        assert trials_to_add(storage, "present", 2) == 0


def lamp_split(spec_path: Path) -> object:
    spec = load_dataset(spec_path)
    rng = np.random.default_rng(2)
    n = 160
    height = rng.uniform(10, 290, n)
    watts = rng.uniform(5, 480, n)
    frame = pd.DataFrame(
        {
            "record_id": [f"l{i}" for i in range(n)],
            "partition_key": "batch-1",
            "sale_month": pd.NaT,
            "arrival_seq": range(n),
            "height": height,
            "watts": watts,
            "shade": rng.choice(["glass", "paper"], n),
            "price": 20 + 0.3 * height + 0.1 * watts * np.exp(rng.normal(0, 0.1, n)),
        }
    )
    return split(frame, spec, holdout_months=1, validation_months=1, seed=1)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_rerun_adds_no_trials_past_the_budget_and_a_yaml_change_starts_a_new_study(
    settings: Settings, tmp_path: Path
) -> None:
    base, changed = lamps(tmp_path), lamps(tmp_path, derived="derived: {power_per_cm: watts / (height + 1)}\n")
    training = TrainingConfig(n_trials=2, boosting_rounds=30, seed=3)
    with own_warehouse(settings, "study_rerun") as (_, warehouse):
        registry = ModelRegistry(tracking_uri="http://127.0.0.1:1")  # only its model name is read

        def run(spec_path: Path) -> dict:
            output = hyperparameter_study(
                training_dataset=lamp_split(spec_path), warehouse=warehouse, dataset=Dataset(path=str(spec_path)),
                training=training, registry=registry,
            )  # fmt: skip
            return {key: getattr(value, "value", value) for key, value in output.metadata.items()}

        first, again, other = run(base), run(base), run(changed)
    assert (first["new_trials"], first["trials"]) == (2, 2)
    assert again["study"] == first["study"] and (again["new_trials"], again["trials"]) == (0, 2)
    assert again["best_validation_rmsle"] == pytest.approx(first["best_validation_rmsle"])
    assert other["study"] != first["study"] and (other["new_trials"], other["trials"]) == (2, 2)
