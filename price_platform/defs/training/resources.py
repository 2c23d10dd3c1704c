"""Budgets and windows of a training run, as a Dagster resource."""

from __future__ import annotations

import dagster as dg

from price_platform.defs.features.project import DBT_DIR
from price_platform.settings import Settings, default


class TrainingConfig(dg.ConfigurableResource):
    """Windows, study budgets (trials, seconds, most boosting rounds), interval coverage, seed, threads, trees per round."""

    holdout_months: int = default("holdout_months")
    validation_months: int = default("validation_months")
    n_trials: int = default("n_trials")
    study_timeout_seconds: float = default("study_timeout_seconds")
    boosting_rounds: int = 1200
    interval_coverage: float = default("interval_coverage")
    seed: int = default("seed")
    threads: int = default("threads")
    parallel_trees: int = default("parallel_trees")
    dbt_manifest_path: str = str(DBT_DIR / "target" / "manifest.json")

    @classmethod
    def from_settings(cls, settings: Settings) -> TrainingConfig:
        return cls(
            holdout_months=settings.holdout_months,
            validation_months=settings.validation_months,
            n_trials=settings.n_trials,
            study_timeout_seconds=settings.study_timeout_seconds,
            interval_coverage=settings.interval_coverage,
            seed=settings.seed,
            threads=settings.threads,
            parallel_trees=settings.parallel_trees,
        )
