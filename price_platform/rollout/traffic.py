"""Which versions see live traffic besides the champion: the ``shadow`` alias and the canary share.

Both live in the MLflow registry beside ``champion`` and ``challenger`` (the alias ``shadow``, and
the registered model's tag :data:`~price_platform.rollout.CANARY_SHARE_TAG`), so API servers
pick them up by the same alias poll; every change is a row of ``model_registry.audit_log``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from price_platform.registry import CHALLENGER, CHAMPION, tracking
from price_platform.rollout import CANARY_SHARE_TAG, SHADOW
from price_platform.warehouse import connect


class RolloutError(ValueError):
    """A shadow or canary that cannot be set as asked; nothing was changed."""


@dataclass(frozen=True)
class Traffic:
    """The registry's rollout state: versions of each alias (``None``: unset) and the canary share."""

    champion: str | None
    challenger: str | None
    shadow: str | None
    canary_share: float


def current(tracking_uri: str, model_name: str) -> Traffic:
    """The aliases and canary share as the registry holds them now."""
    mlflow_client = tracking.client(tracking_uri)
    return Traffic(
        champion=_alias(mlflow_client, model_name, CHAMPION),
        challenger=_alias(mlflow_client, model_name, CHALLENGER),
        shadow=_alias(mlflow_client, model_name, SHADOW),
        canary_share=canary_share(mlflow_client, model_name),
    )


def canary_share(mlflow_client: MlflowClient, model_name: str) -> float:
    """The share of requests the ``challenger`` answers (0 when unset or the model is unknown)."""
    try:
        tags = mlflow_client.get_registered_model(model_name).tags
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return 0.0
        raise
    return float(tags.get(CANARY_SHARE_TAG, 0.0))


def set_canary(tracking_uri: str, model_name: str, share: float, *, dsn: str, actor: str) -> Traffic:
    """Let the ``challenger`` answer ``share`` of the requests (0 stops the canary)."""
    if not (math.isfinite(share) and 0.0 <= share <= 1.0):
        raise RolloutError(f"canary share must be a number from 0 to 1, got {share}")
    mlflow_client = tracking.client(tracking_uri)
    challenger = _alias(mlflow_client, model_name, CHALLENGER)
    if share > 0 and challenger is None:
        raise RolloutError(f"{model_name} has no {CHALLENGER!r} version to send {share:.0%} of the traffic to")
    if share > 0 and challenger == _alias(mlflow_client, model_name, CHAMPION):
        raise RolloutError(f"version {challenger} is already the champion: a canary of it compares nothing")
    mlflow_client.set_registered_model_tag(model_name, CANARY_SHARE_TAG, repr(float(share)))
    audit(dsn, actor, "rollout.canary", {"model_name": model_name, "version": challenger, "share": share})
    return current(tracking_uri, model_name)


def set_shadow(tracking_uri: str, model_name: str, version: str | None, *, dsn: str, actor: str) -> Traffic:
    """Point the alias ``shadow`` at ``version`` (``None``: remove it); the version must be registered."""
    mlflow_client = tracking.client(tracking_uri)
    if version is None:
        if _alias(mlflow_client, model_name, SHADOW) is not None:
            mlflow_client.delete_registered_model_alias(model_name, SHADOW)
    else:
        mlflow_client.get_model_version(model_name, version)  # raises for an unknown version
        if version == _alias(mlflow_client, model_name, CHAMPION):
            raise RolloutError(f"version {version} is the champion: it cannot shadow itself")
        mlflow_client.set_registered_model_alias(model_name, SHADOW, version)
    audit(dsn, actor, "rollout.shadow", {"model_name": model_name, "version": version})
    return current(tracking_uri, model_name)


def end_rollout(tracking_uri: str, model_name: str, version: str) -> None:
    """Take ``version`` off live traffic: canary share 0, aliases ``challenger``/``shadow`` removed if they hold it."""
    mlflow_client = tracking.client(tracking_uri)
    mlflow_client.set_registered_model_tag(model_name, CANARY_SHARE_TAG, "0.0")
    for alias in (CHALLENGER, SHADOW):
        if _alias(mlflow_client, model_name, alias) == version:
            mlflow_client.delete_registered_model_alias(model_name, alias)


def audit(dsn: str, actor: str, action: str, detail: dict[str, object]) -> None:
    """One row of ``model_registry.audit_log``."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "insert into model_registry.audit_log (actor, action, detail) values (%s, %s, %s)",
            (actor, action, json.dumps(detail)),
        )


def _alias(mlflow_client: MlflowClient, model_name: str, alias: str) -> str | None:
    found = tracking.version_by_alias(mlflow_client, model_name, alias)
    return None if found is None else str(found.version)
