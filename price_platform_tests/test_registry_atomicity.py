"""Promotion and rollback atomicity: a failure after the alias moved puts it back, so no champion moves without its row."""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import psycopg2
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from price_platform.datasets import load_dataset
from price_platform.modeling import build_ridge_baseline, read_sample
from price_platform.registry import ARCHIVED_TAG, CHALLENGER, CHAMPION, promotion, tracking
from price_platform.registry.promotion import Verdict, deployments, promote, rollback
from price_platform.registry.versions import register_candidate
from price_platform.settings import Settings
from price_platform.warehouse import connect

PASSED = lambda _champion: Verdict(True, "test")  # noqa: E731


@pytest.fixture(scope="module")
def registered(settings: Settings, mlflow_server, postgres):
    """A model with versions 1 (champion), 2 (champion, replacing 1) and 3 (challenger)."""
    spec = load_dataset(settings.dataset)
    frame = read_sample(spec).head(400)
    pipeline = build_ridge_baseline(spec).fit(frame[spec.features], frame[spec.target])
    name = f"atomic-{uuid.uuid4().hex[:6]}"

    def register() -> str:
        return register_candidate(
            mlflow_server, name, pipeline, frame[spec.features], dsn=postgres.dsn(),
            interval_log_halfwidth=0.2, data_version="atomicity", metrics={"holdout_rmsle": 0.1},
        ).version

    first = register()
    promote(mlflow_server, name, first, dsn=postgres.dsn(), actor="test", check=PASSED)
    second = register()
    promote(mlflow_server, name, second, dsn=postgres.dsn(), actor="test", check=PASSED)
    third = register()
    return name, first, second, third, register


def _fail_on(monkeypatch: pytest.MonkeyPatch, method: str, when) -> list[tuple]:
    """Make ``MlflowClient.<method>`` raise for calls matching ``when``; return the calls seen."""
    original = getattr(MlflowClient, method)
    calls: list[tuple] = []

    def failing(self, *args, **kwargs):
        calls.append(args)
        if when(*args):
            raise MlflowException(f"injected failure in {method}{args}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, method, failing)
    return calls


def _aliases(mlflow_server: str, name: str) -> dict[str, str | None]:
    client = tracking.client(mlflow_server)
    found = {alias: tracking.version_by_alias(client, name, alias) for alias in (CHAMPION, CHALLENGER)}
    return {alias: None if v is None else str(v.version) for alias, v in found.items()}


def test_a_tag_failure_after_the_alias_moved_puts_the_champion_back(registered, mlflow_server, postgres, monkeypatch) -> None:
    name, first, second, third, _ = registered
    rows = deployments(postgres.dsn(), name)
    # The archived tag of the old champion is written after the alias has moved to the new one.
    calls = _fail_on(monkeypatch, "set_model_version_tag", lambda n, v, key, value: key == ARCHIVED_TAG and value == "true")
    with pytest.raises(MlflowException, match="injected failure"):
        promote(mlflow_server, name, third, dsn=postgres.dsn(), actor="test", check=PASSED)
    assert any(args[1] == third for args in calls), "the failure came after the alias had moved to the new version"
    monkeypatch.undo()
    assert _aliases(mlflow_server, name) == {CHAMPION: second, CHALLENGER: third}
    assert deployments(postgres.dsn(), name) == rows
    assert tracking.client(mlflow_server).get_model_version(name, second).tags[ARCHIVED_TAG] == "false"

    # Rollback still finds what to roll back to, and the promotion can be retried.
    row = rollback(mlflow_server, name, dsn=postgres.dsn(), actor="test")
    assert (row.from_version, row.to_version) == (second, first)
    promote(mlflow_server, name, third, dsn=postgres.dsn(), actor="test", check=PASSED)
    assert _aliases(mlflow_server, name) == {CHAMPION: third, CHALLENGER: None}


def test_a_commit_failure_after_the_alias_moved_puts_the_champion_back(registered, mlflow_server, postgres, monkeypatch) -> None:
    name, register = registered[0], registered[-1]
    fourth = register()
    before = _aliases(mlflow_server, name)
    rows = deployments(postgres.dsn(), name)

    @contextmanager
    def commit_fails(dsn: str):
        with connect(dsn) as connection:
            yield _CommitFails(connection)

    monkeypatch.setattr(promotion, "connect", commit_fails)
    with pytest.raises(psycopg2.OperationalError, match="injected commit failure"):
        promote(mlflow_server, name, fourth, dsn=postgres.dsn(), actor="test", check=PASSED)
    monkeypatch.undo()
    assert _aliases(mlflow_server, name) == before == {CHAMPION: before[CHAMPION], CHALLENGER: fourth}
    assert deployments(postgres.dsn(), name) == rows


class _CommitFails:
    """A connection whose commit fails (the database went away at the last moment)."""

    def __init__(self, connection) -> None:
        self._connection = connection

    def __getattr__(self, name: str):
        return getattr(self._connection, name)

    def commit(self) -> None:
        raise psycopg2.OperationalError("injected commit failure")


def test_a_failed_rollback_leaves_the_champion_where_it_was(registered, mlflow_server, postgres, monkeypatch) -> None:
    name = registered[0]
    before = _aliases(mlflow_server, name)
    rows = deployments(postgres.dsn(), name)
    _fail_on(monkeypatch, "set_model_version_tag", lambda n, v, key, value: key == ARCHIVED_TAG and value == "true")
    with pytest.raises(MlflowException, match="injected failure"):
        rollback(mlflow_server, name, dsn=postgres.dsn(), actor="test")
    monkeypatch.undo()
    assert _aliases(mlflow_server, name) == before
    assert deployments(postgres.dsn(), name) == rows
