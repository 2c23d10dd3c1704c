"""The hyperparameter study: Optuna (seeded TPE) over XGBoost's settings, pruned per boosting round.

The study lives in PostgreSQL (the ``<name>_optuna`` database), so any number of processes
or machines can add trials to one study: each calls :func:`run_study` with the same study
name and its own ``worker`` number (which offsets the sampler's seed). The first trial of a
new study tries the blend's default settings. A trial trains the blend's XGBoost member on
the training window and reports its RMSLE on the validation window every few rounds; the
pruner stops trials that fall behind.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
import xgboost as xgb

from price_platform.datasets import DatasetSpec
from price_platform.modeling import TREE_GROUPS, XGBOOST_DEFAULTS, build_blend_pipeline
from price_platform.training.dataset import TrainingSplit, without_area_outliers

log = logging.getLogger(__name__)

#: Boosting rounds between two reports to the pruner.
REPORT_EVERY = 25


@dataclass(frozen=True)
class StudyResult:
    """The best trial of a study and what the study cost."""

    study_name: str
    best_params: dict[str, Any]
    best_value: float
    trials: int
    pruned: int
    seconds: float
    history: pd.DataFrame


class PruneOnValidation(xgb.callback.TrainingCallback):
    """Reports the validation RMSLE to an Optuna trial every ``every`` rounds; stops a pruned trial."""

    def __init__(self, trial: optuna.Trial, every: int = REPORT_EVERY) -> None:
        self.trial = trial
        self.every = every
        self.best = math.inf
        self.best_rounds = 0

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        score = evals_log["validation"]["rmse"][-1]
        if score < self.best:
            self.best, self.best_rounds = score, epoch + 1
        if (epoch + 1) % self.every == 0:
            self.trial.report(score, step=epoch + 1)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at round {epoch + 1} with validation RMSLE {score:.5f}")
        return False


def search_space(trial: optuna.Trial) -> dict[str, Any]:
    """XGBoost settings a trial tries."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.015, 0.12, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 6),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 10.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.2, 0.8),
        "reg_lambda": trial.suggest_float("reg_lambda", 0.1, 10.0, log=True),
    }


def tree_matrices(spec: DatasetSpec, data: TrainingSplit, seed: int) -> tuple[xgb.DMatrix, xgb.DMatrix]:
    """The XGBoost member's inputs for the training and validation windows, log target as label."""
    rows = without_area_outliers(data.train, spec)
    encode = build_blend_pipeline(spec, rows, seed=seed)[:-1]
    train_x = encode.fit_transform(rows[spec.features], rows[spec.target])
    validation_x = encode.transform(data.validation[spec.features])
    columns = [c for c in train_x.columns if c.split("__", 1)[0] in TREE_GROUPS]
    train = xgb.DMatrix(train_x[columns], label=np.log(rows[spec.target].to_numpy(float)))
    validation = xgb.DMatrix(validation_x[columns], label=np.log(data.validation[spec.target].to_numpy(float)))
    return train, validation


def open_study(storage_url: str, study_name: str, *, seed: int, pruning: bool = True, rounds: int | None = None) -> optuna.Study:
    """Create or join the study ``study_name`` in the PostgreSQL storage."""
    rounds = rounds or int(XGBOOST_DEFAULTS["n_estimators"])
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.HyperbandPruner(min_resource=4 * REPORT_EVERY, max_resource=rounds, reduction_factor=3)
        if pruning
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        study_name=study_name,
        storage=optuna.storages.RDBStorage(storage_url, heartbeat_interval=60, grace_period=120),
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True),
        pruner=pruner,
        direction="minimize",
        load_if_exists=True,
    )


def run_study(
    spec: DatasetSpec,
    data: TrainingSplit,
    *,
    storage_url: str,
    study_name: str,
    n_trials: int,
    timeout: float,
    seed: int = 42,
    worker: int = 0,
    threads: int = 1,
    pruning: bool = True,
    rounds: int | None = None,
) -> StudyResult:
    """Add up to ``n_trials`` trials (within ``timeout`` seconds) to the study and return its best trial."""
    rounds = rounds or int(XGBOOST_DEFAULTS["n_estimators"])
    train, validation = tree_matrices(spec, data, seed)
    study = open_study(storage_url, study_name, seed=seed + worker, pruning=pruning, rounds=rounds)
    if not study.get_trials(deepcopy=False):
        # The hand-set defaults are the first point tried: the study can only improve on them.
        study.enqueue_trial({k: v for k, v in XGBOOST_DEFAULTS.items() if k != "n_estimators"}, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial)
        trial.set_user_attr("worker", worker)
        callback = PruneOnValidation(trial)
        xgb.train(
            {**params, "objective": "reg:squarederror", "eval_metric": "rmse", "nthread": threads, "seed": seed},
            train,
            num_boost_round=rounds,
            evals=[(validation, "validation")],
            verbose_eval=False,
            callbacks=[callback],
        )
        trial.set_user_attr("n_estimators", callback.best_rounds)
        return callback.best

    started = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, timeout=timeout, gc_after_trial=False)
    seconds = time.perf_counter() - started
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"study {study_name} has no completed trial after {len(trials)} trials")
    best = study.best_trial
    history = pd.DataFrame(
        [{"trial": t.number, "state": t.state.name, "value": t.value, **t.params} for t in trials]
    )
    return StudyResult(
        study_name=study_name,
        best_params={**best.params, "n_estimators": int(best.user_attrs["n_estimators"])},
        best_value=float(best.value),
        trials=len(trials),
        pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        seconds=seconds,
        history=history,
    )


def tuned_params(result: StudyResult | None) -> Mapping[str, Any]:
    """The best trial's settings, or the blend's defaults when no study ran."""
    return dict(result.best_params) if result else dict(XGBOOST_DEFAULTS)
