"""Training domain: training_dataset, hyperparameter_study, candidate_model, model_evaluation."""

from __future__ import annotations

import dagster as dg

from price_platform.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """The training assets and the ``training`` resource built from ``settings``."""
    from price_platform.defs.training.assets import (
        candidate_model,
        hyperparameter_study,
        model_evaluation,
        training_dataset,
    )
    from price_platform.defs.training.resources import TrainingConfig

    return dg.Definitions(
        assets=[training_dataset, hyperparameter_study, candidate_model, model_evaluation],
        resources={"training": TrainingConfig.from_settings(settings)},
    )
