"""Loading a registered model version, and the current champion, with what serving needs of it."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow.artifacts
import mlflow.models
import pandas as pd
from sklearn.pipeline import Pipeline

from price_platform.registry import CHAMPION, artifact_format, integrity, tracking

log = logging.getLogger(__name__)


class NoChampionError(LookupError):
    """The registered model has no version with the alias ``champion``."""


@dataclass(frozen=True)
class ChampionModel:
    """A loaded model version: the fitted pipeline, its interval half-width and its run's metrics."""

    version: str
    pipeline: Pipeline
    interval_log_halfwidth: float
    metrics: dict[str, float] = field(default_factory=dict)
    data_version: str = ""
    run_id: str = ""
    input_example: pd.DataFrame | None = None  # real records logged with the model (smoke tests)


def load_version(tracking_uri: str, model_name: str, version: str, *, dsn: str | None = None) -> ChampionModel:
    """Download, check and load one registered version with its tags and run metrics.

    Before anything is deserialised (:func:`check_artifact`): the artifact must be in the
    platform's format (a cloudpickle version raises
    :class:`~price_platform.registry.artifact_format.UnsafeArtifactError` saying to retrain or
    re-register it) and, with ``dsn`` (the platform database), every file must match the
    digests recorded at registration (:class:`~price_platform.registry.integrity.IntegrityError`
    otherwise). The API, the promotion command and rollback always pass ``dsn``.
    """
    mlflow_client = tracking.client(tracking_uri)
    model_version = mlflow_client.get_model_version(model_name, version)
    # models:/ URIs resolve through the fluent API's tracking URI, whatever is passed here.
    with tempfile.TemporaryDirectory(prefix="price-model-") as folder, tracking.using(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=folder))
        check_artifact(local, model_name, version, dsn=dsn)
        pipeline = artifact_format.load_pipeline(local / "data" / artifact_format.DATA_FOLDER)
        example = mlflow.models.Model.load(str(local)).load_input_example(str(local))
    tags = model_version.tags
    run_id = tags.get("run_id") or model_version.run_id or ""
    metrics = dict(mlflow_client.get_run(run_id).data.metrics) if run_id else {}
    return ChampionModel(
        version=str(model_version.version),
        pipeline=pipeline,
        interval_log_halfwidth=float(tags["interval_log_halfwidth"]),
        metrics=metrics,
        data_version=tags.get("data_version", ""),
        run_id=run_id,
        input_example=example if isinstance(example, pd.DataFrame) else None,
    )


def champion_version(tracking_uri: str, model_name: str) -> str | None:
    """The version the alias ``champion`` points to, ``None`` before the first promotion."""
    found = tracking.version_by_alias(tracking.client(tracking_uri), model_name, CHAMPION)
    return None if found is None else str(found.version)


def load_champion(tracking_uri: str, model_name: str, *, dsn: str | None = None) -> ChampionModel:
    """The current champion, loaded as :func:`load_version` does; raise :class:`NoChampionError` when there is none."""
    version = champion_version(tracking_uri, model_name)
    if version is None:
        raise NoChampionError(f"registered model {model_name!r} has no {CHAMPION!r} version")
    return load_version(tracking_uri, model_name, version, dsn=dsn)


#: What a refused artifact raises: a file that is not the one registered, or a format that is not loaded.
ARTIFACT_ERRORS = (integrity.IntegrityError, artifact_format.UnsafeArtifactError)


def verify_version(tracking_uri: str, model_name: str, version: str, *, dsn: str) -> None:
    """Download one version and check its format and digests without loading it (raises :data:`ARTIFACT_ERRORS`)."""
    with tempfile.TemporaryDirectory(prefix="price-model-") as folder, tracking.using(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=folder))
        check_artifact(local, model_name, version, dsn=dsn)


def check_artifact(local: Path, model_name: str, version: str, *, dsn: str | None) -> None:
    """Raise one of :data:`ARTIFACT_ERRORS` unless the downloaded artifact ``local`` may be loaded.

    A version with recorded digests is checked against them first (so a changed file is
    reported as such, whichever it is), then for its format; one without (registered in the
    old pickle format, or outside ``register_candidate``) gets the format's message first.
    """
    label = f"{model_name} version {version}"
    if dsn is not None and integrity.recorded_digests(dsn, model_name, version):
        integrity.verify(dsn, model_name, version, local)
        artifact_format.refuse_other_formats(local, label)
        return
    artifact_format.refuse_other_formats(local, label)
    if dsn is not None:
        integrity.verify(dsn, model_name, version, local)


def load_rival(tracking_uri: str, model_name: str, version: str | None, *, dsn: str | None = None) -> ChampionModel | None:
    """The champion a challenger is measured against; ``None`` without one or when it is in a refused format.

    A champion saved in the old pickle format cannot be loaded any more: the gate then judges
    the challenger as if there were no champion (logged), which is how retraining replaces it.
    A champion whose files fail their digests still raises.
    """
    if version is None:
        return None
    try:
        return load_version(tracking_uri, model_name, version, dsn=dsn)
    except artifact_format.UnsafeArtifactError as error:
        log.warning("champion %s version %s is not compared against: %s", model_name, version, error)
        return None
