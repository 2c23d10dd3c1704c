"""Registering a fitted pipeline as a new model version with the alias ``challenger``."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import pandas as pd
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline

from price_platform.registry import CHALLENGER, artifact_format, integrity, tracking
from price_platform.registry.provenance import git_commit, package_set_hash

#: Distributions a registered pipeline needs to be loaded again (pinned to what trained it).
_RUNTIME_PACKAGES = ("price-platform", "scikit-learn", "xgboost", "pandas", "numpy", "skops")


class InvalidMetricError(ValueError):
    """A metric that is not a finite number: the run fails and nothing is registered."""


@dataclass(frozen=True)
class CandidateVersion:
    """A registered model version and the MLflow run that produced it."""

    model_name: str
    version: str
    run_id: str


def check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics as floats; raise :class:`InvalidMetricError` naming every NaN or infinite one."""
    values = {name: float(value) for name, value in metrics.items()}
    bad = sorted(name for name, value in values.items() if not math.isfinite(value))
    if bad:
        raise InvalidMetricError(f"metrics are not finite numbers: {', '.join(f'{n}={values[n]}' for n in bad)}")
    return values


def register_candidate(
    tracking_uri: str,
    model_name: str,
    pipeline: Pipeline,
    input_example: pd.DataFrame,
    *,
    dsn: str,
    interval_log_halfwidth: float,
    data_version: str,
    dbt_manifest_hash: str = "none",
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    version_tags: Mapping[str, str] | None = None,
    figures: Mapping[str, Any] | None = None,
    tables: Mapping[str, pd.DataFrame] | None = None,
    experiment: str | None = None,
) -> CandidateVersion:
    """Log ``pipeline`` in one MLflow run, register it under ``model_name`` and alias it ``challenger``.

    The run carries ``params``, ``metrics``, ``figures`` (PNG), ``tables`` (JSON) and the tags
    that make it reproducible; the version carries the tags serving reads
    (``interval_log_halfwidth``, ``data_version``, ``dbt_manifest_hash``, ``git_commit``)
    and ``version_tags`` (the training window ``train_start``/``train_end`` monitoring reads).
    A NaN or infinite metric or half-width raises before anything is logged.

    The model is logged as a ``python_function`` model in :mod:`~price_platform.registry.artifact_format`
    (boosters in XGBoost's UBJ format, the rest in skops; no pickle), and the SHA-256 of every
    file of the registered artifact is recorded in the platform database ``dsn`` before the
    alias moves, so that loaders can tell the files are the ones registered.
    """
    values = check_metrics({**(metrics or {}), "interval_log_halfwidth": interval_log_halfwidth})
    provenance = {
        "git_commit": git_commit(),
        "data_version": data_version,
        "dbt_manifest_hash": dbt_manifest_hash,
        "package_set_hash": package_set_hash(),
    }
    example = input_example.head(5)
    signature = infer_signature(example, pipeline.predict(example))
    requirements = [f"{name}=={metadata.version(name)}" for name in _RUNTIME_PACKAGES]
    mlflow_client = tracking.client(tracking_uri)
    with tracking.using(tracking_uri):
        mlflow.set_experiment(experiment or model_name)
        with mlflow.start_run(tags={**provenance, **(tags or {})}) as run:
            if params:
                mlflow.log_params({name: str(value)[:500] for name, value in params.items()})
            mlflow.log_metrics(values)
            for name, figure in (figures or {}).items():
                mlflow.log_figure(figure, f"plots/{name}.png")
            for name, frame in (tables or {}).items():
                mlflow.log_table(frame, f"tables/{name}.json")
            with tempfile.TemporaryDirectory(prefix="price-model-") as scratch:
                data = artifact_format.save_pipeline(pipeline, Path(scratch) / artifact_format.DATA_FOLDER)
                written = integrity.file_digests(data)
                logged = mlflow.pyfunc.log_model(
                    name="model",
                    loader_module=artifact_format.__name__,
                    data_path=str(data),
                    signature=signature,
                    input_example=example,
                    pip_requirements=requirements,
                    registered_model_name=model_name,
                )
            version = str(logged.registered_model_version)
            _record_registered_files(dsn, tracking_uri, model_name, version, written)
            serving_tags = {
                "interval_log_halfwidth": repr(float(interval_log_halfwidth)),
                "run_id": run.info.run_id,
                **provenance,
                **(version_tags or {}),
            }
            for key, value in serving_tags.items():
                mlflow_client.set_model_version_tag(model_name, version, key, value)
            mlflow_client.set_registered_model_alias(model_name, CHALLENGER, version)
    return CandidateVersion(model_name=model_name, version=version, run_id=run.info.run_id)


def _record_registered_files(
    dsn: str, tracking_uri: str, model_name: str, version: str, written: Mapping[str, integrity.FileDigest]
) -> None:
    """Record the digests of the registered artifact as the store holds it.

    The pipeline's own files (``data/serving/*``) must match what was written here, so a file
    changed in the store between upload and this check is caught rather than recorded.
    """
    with tempfile.TemporaryDirectory(prefix="price-model-") as folder:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=folder)
        stored = integrity.file_digests(Path(local))
    prefix = f"data/{artifact_format.DATA_FOLDER}/"
    uploaded = {path[len(prefix):]: digest for path, digest in stored.items() if path.startswith(prefix)}
    if uploaded != dict(written):
        raise integrity.IntegrityError(
            f"{model_name} version {version}: the stored pipeline files differ from the ones written; not recorded"
        )
    integrity.record_digests(dsn, model_name, version, stored)
