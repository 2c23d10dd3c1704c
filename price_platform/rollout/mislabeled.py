"""A challenger made worse on purpose: a version's pipeline refitted on its own rows with every price scaled.

A label bug (prices in the wrong unit for a training run) that passed no gate: the demo's
``--worse-challenger`` registers it as ``challenger`` past the holdout gate, so that the checks
of the live path are what must stop it (the offline replay, unless the replayed prices favour
it, blocks its canary; the sequential gate rolls it back on its live errors). Its holdout figure is measured on the real
prices of the rows after its training window, so its registered metrics say it is worse.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.base import clone

from price_platform.datasets import DatasetSpec
from price_platform.registry import tracking
from price_platform.registry.champion import load_version
from price_platform.registry.versions import CandidateVersion, register_candidate
from price_platform.rollout.sequential import squared_log_errors
from price_platform.training.dataset import read_features, without_area_outliers

#: The prices the worse challenger is fitted on are the real ones times this.
LABEL_FACTOR = 1.35


def fit_and_holdout_rows(features: pd.DataFrame, train_start: str, train_end: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of a version's training window (partition keys ``train_start`` .. ``train_end``) and the rows after it."""
    keys = features["partition_key"].astype(str)
    return features[(keys >= train_start) & (keys <= train_end)], features[keys > train_end]


def register_mislabeled(
    tracking_uri: str, model_name: str, version: str, *, dsn: str, engine: sa.Engine, spec: DatasetSpec,
    factor: float = LABEL_FACTOR,
) -> CandidateVersion:
    """Refit ``version``'s pipeline on its training window with prices times ``factor``; register it as ``challenger``."""
    source = load_version(tracking_uri, model_name, version, dsn=dsn)
    tags = tracking.client(tracking_uri).get_model_version(model_name, version).tags
    fit, holdout = fit_and_holdout_rows(read_features(engine, spec), tags["train_start"], tags["train_end"])
    fit = without_area_outliers(fit.reset_index(drop=True), spec)
    pipeline = clone(source.pipeline).fit(fit[list(spec.features)], fit[spec.target] * factor)
    metrics = {}
    if len(holdout):
        predicted = np.asarray(pipeline.predict(holdout[list(spec.features)]), dtype=float)
        actual = holdout[spec.target].to_numpy(dtype=float)
        metrics["holdout_rmsle"] = float(np.sqrt(squared_log_errors(predicted, actual).mean()))
    return register_candidate(
        tracking_uri,
        model_name,
        pipeline,
        fit[list(spec.features)],
        dsn=dsn,
        interval_log_halfwidth=source.interval_log_halfwidth,
        data_version=source.data_version,
        metrics=metrics,
        tags={"worse_on_purpose": f"version {version} refitted on prices x{factor:g}"},
        version_tags={"train_start": tags["train_start"], "train_end": tags["train_end"]},
    )
