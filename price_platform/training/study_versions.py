"""Which Optuna study a training run belongs to, and how many trials it still needs.

A study is named by the model, the data version and a *search version*: the hash of the data
set description (everything but its free text and source), the study's search space, how a
trial's blend is scored, the booster's defaults and the number of boosting rounds. A run on the
same data with the same description and search space joins the same study and only tops it up
to the trial budget; a changed YAML or search space starts a study of its own instead of adding
trials to the old one (whose scores were measured on other inputs).
"""

from __future__ import annotations

import hashlib
import inspect
import json

import optuna

from price_platform.datasets import DatasetSpec
from price_platform.modeling import XGBOOST_DEFAULTS
from price_platform.training.study import StudyInputs, search_space


def search_version(spec: DatasetSpec, rounds: int) -> str:
    """Hash of what a trial's score depends on besides the data: description, search space, scoring, defaults, rounds."""
    description = spec.model_dump(mode="json", exclude={"description", "source"})
    text = json.dumps(
        {
            "description": description,
            "search_space": inspect.getsource(search_space),
            "scoring": inspect.getsource(StudyInputs.blend),
            "defaults": XGBOOST_DEFAULTS,
            "rounds": rounds,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def study_name(model_name: str, data_version: str, spec: DatasetSpec, rounds: int) -> str:
    """The study of this model, data version and search version."""
    return f"{model_name}-{data_version}-{search_version(spec, rounds)}"


def trials_to_add(storage_url: str, name: str, n_trials: int) -> int:
    """How many trials the study still needs to have ``n_trials`` finished ones (all of them if it is new)."""
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return n_trials
    finally:
        storage.remove_session()
    finished = sum(trial.state.is_finished() for trial in study.get_trials(deepcopy=False))
    return max(n_trials - finished, 0)
