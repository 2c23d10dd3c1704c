"""Access to one MLflow tracking server and its registry, without leaving global state behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException


def client(tracking_uri: str) -> MlflowClient:
    """A client whose tracking and registry are both ``tracking_uri``."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def using(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.start_run``, ``log_model``) at ``tracking_uri`` for a block."""
    previous_tracking, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)


def version_by_alias(mlflow_client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version an alias points to, or ``None`` when the alias (or the model) does not exist."""
    try:
        return mlflow_client.get_model_version_by_alias(model_name, alias)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise
