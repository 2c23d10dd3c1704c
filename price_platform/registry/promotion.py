"""Promotion and rollback of the ``champion`` alias, gated, serialised and written to ``deployments``.

Both run inside one PostgreSQL transaction holding an advisory lock per model name: the
champion is read, the check runs against *that* champion, the deployment row is inserted and
the alias moves, so two racing promotions are applied one after the other and the second is
judged against the first's result. A refused promotion leaves the aliases as they were and
writes a ``refuse`` row.

Before its check, the version that would become champion is downloaded and verified
(:func:`~price_platform.registry.champion.verify_version`: the platform's format and the
digests recorded at registration); one that fails is refused, and audited.

The alias moves last, after the ``deployments`` row is written, and the transaction commits
right after; if moving the alias, a tag call or the commit fails, the aliases and tags are put
back as they were before the error is raised, so the champion never moves without its row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from mlflow import MlflowClient

from price_platform.registry import ARCHIVED_TAG, CHALLENGER, CHAMPION, integrity, tracking
from price_platform.registry.champion import ARTIFACT_ERRORS, verify_version
from price_platform.warehouse import connect

log = logging.getLogger(__name__)

#: First key of the advisory lock taken around alias switches (the second is the model name's hash).
PROMOTION_LOCK = 7_310_003
GATE_METRIC = "holdout_rmsle"


class PromotionRefused(RuntimeError):
    """A promotion or rollback whose checks failed; the champion is unchanged."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of a promotion check, with the figures it was decided on."""

    passed: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)


#: A check receives the current champion version (``None`` when there is none).
Check = Callable[[str | None], Verdict]


@dataclass(frozen=True)
class Deployment:
    """One row of ``model_registry.deployments``."""

    id: int
    action: str
    from_version: str | None
    to_version: str
    reason: str


def beats(challenger: float, champion: float | None, margin: float) -> bool:
    """Whether a challenger's error is lower than the champion's by at least ``margin`` (relative)."""
    return champion is None or challenger <= champion * (1.0 - margin) and challenger < champion


def metric_gate(tracking_uri: str, model_name: str, version: str, margin: float = 0.0) -> Check:
    """A check comparing the runs' recorded ``holdout_rmsle`` (lower wins by ``margin``)."""

    def check(champion: str | None) -> Verdict:
        mlflow_client = tracking.client(tracking_uri)
        challenger_value = _run_metric(mlflow_client, model_name, version, GATE_METRIC)
        if challenger_value is None:
            return Verdict(False, f"version {version} has no {GATE_METRIC} metric")
        if champion is None:
            return Verdict(True, "no champion yet", {f"challenger_{GATE_METRIC}": challenger_value})
        champion_value = _run_metric(mlflow_client, model_name, champion, GATE_METRIC)
        figures = {f"challenger_{GATE_METRIC}": challenger_value}
        if champion_value is not None:
            figures[f"champion_{GATE_METRIC}"] = champion_value
        if beats(challenger_value, champion_value, margin):
            return Verdict(True, f"{GATE_METRIC} {challenger_value:.5f} beats {champion_value} by margin {margin}", figures)
        return Verdict(
            False, f"{GATE_METRIC} {challenger_value:.5f} does not beat champion's {champion_value:.5f} by {margin:.1%}", figures
        )

    return check


def promote(
    tracking_uri: str,
    model_name: str,
    version: str,
    *,
    dsn: str,
    actor: str,
    reason: str = "",
    check: Check | None = None,
    margin: float = 0.0,
    dagster_run_id: str | None = None,
) -> Deployment:
    """Make ``version`` the champion if ``check`` (default: :func:`metric_gate`) passes.

    Raises :class:`PromotionRefused` (after writing a ``refuse`` row) when it does not.
    """
    mlflow_client = tracking.client(tracking_uri)
    mlflow_client.get_model_version(model_name, version)  # raises for an unknown version
    check = check or metric_gate(tracking_uri, model_name, version, margin)
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select pg_advisory_xact_lock(%s, hashtext(%s))", (PROMOTION_LOCK, model_name))
        champion = _alias(mlflow_client, model_name, CHAMPION)
        if champion == version:
            verdict = Verdict(False, f"version {version} is already the champion")
        else:
            verdict = _artifact_verdict(tracking_uri, model_name, version, dsn, actor, "promotion") or check(champion)
        if not verdict.passed:
            _insert(cursor, model_name, champion, version, "refuse", verdict, actor, reason, dagster_run_id)
            connection.commit()
            raise PromotionRefused(f"promotion of {model_name} version {version} refused: {verdict.reason}")
        row = _insert(cursor, model_name, champion, version, "promote", verdict, actor, reason, dagster_run_id)
        challenger = _alias(mlflow_client, model_name, CHALLENGER)
        with _restored_on_failure(mlflow_client, model_name, champion, version, challenger):
            _move_champion(mlflow_client, model_name, champion, version)
            if challenger == version:
                mlflow_client.delete_registered_model_alias(model_name, CHALLENGER)
            connection.commit()
    log.info("promoted %s version %s (was %s): %s", model_name, version, champion, verdict.reason)
    return row


def rollback(
    tracking_uri: str,
    model_name: str,
    *,
    dsn: str,
    actor: str,
    reason: str = "",
    check: Check | None = None,
    dagster_run_id: str | None = None,
) -> Deployment:
    """Give the alias ``champion`` back to the version the current champion replaced.

    ``check`` receives the version that would come back and must pass, as for a promotion.
    """
    mlflow_client = tracking.client(tracking_uri)
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select pg_advisory_xact_lock(%s, hashtext(%s))", (PROMOTION_LOCK, model_name))
        champion = _alias(mlflow_client, model_name, CHAMPION)
        if champion is None:
            raise PromotionRefused(f"{model_name} has no champion to roll back")
        cursor.execute(
            "select from_version from model_registry.deployments"
            " where model_name = %s and action = 'promote' and to_version = %s order by id desc limit 1",
            (model_name, champion),
        )
        found = cursor.fetchone()
        if found is None or found[0] is None:
            raise PromotionRefused(f"{model_name} version {champion} replaced no earlier champion: nothing to roll back to")
        target = found[0]
        verdict = _artifact_verdict(tracking_uri, model_name, target, dsn, actor, "rollback") or (
            check(target) if check else Verdict(True, "rollback")
        )
        if not verdict.passed:
            _insert(cursor, model_name, champion, target, "refuse", verdict, actor, reason, dagster_run_id)
            connection.commit()
            raise PromotionRefused(f"rollback of {model_name} to version {target} refused: {verdict.reason}")
        row = _insert(cursor, model_name, champion, target, "rollback", verdict, actor, reason, dagster_run_id)
        with _restored_on_failure(mlflow_client, model_name, champion, target, _alias(mlflow_client, model_name, CHALLENGER)):
            _move_champion(mlflow_client, model_name, champion, target)
            connection.commit()
    log.info("rolled %s back from version %s to %s", model_name, champion, target)
    return row


def record_refusal(
    dsn: str,
    model_name: str,
    version: str,
    verdict: Verdict,
    *,
    champion: str | None,
    actor: str,
    reason: str = "",
    dagster_run_id: str | None = None,
) -> Deployment:
    """Write the ``refuse`` row of a challenger a gate outside :func:`promote` turned down."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        return _insert(cursor, model_name, champion, version, "refuse", verdict, actor, reason, dagster_run_id)


def deployments(dsn: str, model_name: str) -> list[Deployment]:
    """Every deployment row of ``model_name``, oldest first."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select id, action, from_version, to_version, reason from model_registry.deployments"
            " where model_name = %s order by id",
            (model_name,),
        )
        return [Deployment(*row) for row in cursor.fetchall()]


def _alias(mlflow_client: MlflowClient, model_name: str, alias: str) -> str | None:
    found = tracking.version_by_alias(mlflow_client, model_name, alias)
    return None if found is None else str(found.version)


def _run_metric(mlflow_client: MlflowClient, model_name: str, version: str, metric: str) -> float | None:
    run_id = mlflow_client.get_model_version(model_name, version).run_id
    return mlflow_client.get_run(run_id).data.metrics.get(metric) if run_id else None


def _artifact_verdict(
    tracking_uri: str, model_name: str, version: str, dsn: str, actor: str, where: str
) -> Verdict | None:
    """A failing verdict (logged and audited) when the version's artifact fails its checks, else ``None``."""
    try:
        verify_version(tracking_uri, model_name, version, dsn=dsn)
    except ARTIFACT_ERRORS as error:
        log.error("%s of %s version %s refused: %s", where, model_name, version, error)
        integrity.audit_refusal(dsn, actor=actor, model_name=model_name, version=version, where=where, error=error)
        return Verdict(False, f"artifact check failed: {error}")
    return None


@contextmanager
def _restored_on_failure(
    mlflow_client: MlflowClient, model_name: str, old: str | None, new: str, challenger: str | None
) -> Iterator[None]:
    """Put the aliases ``champion``/``challenger`` and the archived tags back if the block raises.

    The block moves the alias and commits the deployment row; an error anywhere in it (a
    tag call, the registry, the commit) must not leave the alias moved without its row.
    """
    try:
        yield
    except BaseException:
        try:
            if old is None:
                mlflow_client.delete_registered_model_alias(model_name, CHAMPION)
            else:
                mlflow_client.set_registered_model_alias(model_name, CHAMPION, old)
                mlflow_client.set_model_version_tag(model_name, old, ARCHIVED_TAG, "false")
            if challenger is not None:
                mlflow_client.set_registered_model_alias(model_name, CHALLENGER, challenger)
        except Exception as error:  # noqa: BLE001 (report both: the original error is raised below)
            log.critical(
                "%s: could not put the champion alias back on %s after a failed switch to %s (%s);"
                " set it by hand", model_name, old, new, error,
            )
        else:
            log.error("%s: switch to version %s failed; champion alias restored to %s", model_name, new, old)
        raise


def _move_champion(mlflow_client: MlflowClient, model_name: str, old: str | None, new: str) -> None:
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, new)
    mlflow_client.set_model_version_tag(model_name, new, ARCHIVED_TAG, "false")
    if old is not None:
        mlflow_client.set_model_version_tag(model_name, old, ARCHIVED_TAG, "true")


def _insert(
    cursor,
    model_name: str,
    from_version: str | None,
    to_version: str,
    action: str,
    verdict: Verdict,
    actor: str,
    reason: str,
    dagster_run_id: str | None,
) -> Deployment:
    text = f"{reason}: {verdict.reason}" if reason else verdict.reason
    cursor.execute(
        "insert into model_registry.deployments"
        " (model_name, from_version, to_version, action, reason, actor, metrics, dagster_run_id)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s) returning id",
        (model_name, from_version, to_version, action, text, actor, json.dumps(verdict.metrics), dagster_run_id),
    )
    return Deployment(cursor.fetchone()[0], action, from_version, to_version, text)
