"""Offline replay: the challenger priced again on logged requests, and the blocking check before its canary."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import numpy as np

from price_platform.defs.resources import Dataset, Warehouse
from price_platform.defs.rollout.assets import canary, offline_replay
from price_platform.defs.rollout.checks import replay_not_worse
from price_platform.defs.rollout.resources import Rollout
from price_platform.rollout.gate import evaluate
from price_platform.rollout.replay import score_as_shadow
from price_platform.rollout.sequential import SequentialTest
from price_platform.rollout.traffic import current
from price_platform_tests.rollout_support import database, fitted, log_requests, rollout  # noqa: F401 (fixtures)

LOGGED_AT = datetime(2026, 3, 2, 12, tzinfo=UTC)
PERIOD = {"start": "2026-03-01", "end": "2026-03-08"}


def run(mlflow_server, database, settings, name: str, period: dict[str, str]) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [offline_replay, replay_not_worse, canary],
        resources={
            "rollout": Rollout(tracking_uri=mlflow_server, model_name=name),
            "warehouse": Warehouse(database_url=str(database.server_url.render_as_string(hide_password=False)),
                                   database_name=database.database_name),
            "dataset": Dataset(path=str(settings.dataset)),
        },
        run_config=dg.RunConfig(ops={"offline_replay": {"config": period}, "canary": {"config": {"share": 0.1}}}),
        raise_on_error=False,
    )


def check_result(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    return result.get_asset_check_evaluations()[0]


def test_a_challenger_better_than_the_answers_given_gets_its_canary(mlflow_server, database, settings, fitted,
                                                                   rollout) -> None:
    spec, frame, _ = fitted
    name, champion, challenger = rollout
    rows = frame.head(120)
    noisy = rows[spec.target].to_numpy() * np.exp(0.5 * np.random.default_rng(1).standard_normal(len(rows)))
    log_requests(database.dsn(), rows, spec, champion, noisy, LOGGED_AT)
    log_requests(database.dsn(), rows.head(5), spec, champion, noisy[:5], datetime(2026, 4, 1, tzinfo=UTC))  # outside

    result = run(mlflow_server, database, settings, name, PERIOD)
    assert result.success
    evaluation = check_result(result)
    assert evaluation.passed
    assert evaluation.metadata["requests"].value == 120
    assert evaluation.metadata["challenger_rmsle"].value < evaluation.metadata["champion_rmsle"].value
    assert current(mlflow_server, name).canary_share == 0.1

    # The same requests scored as the challenger's shadow rows: the gate pairs them and promotes.
    dsn = database.dsn()
    period = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC))
    assert score_as_shadow(mlflow_server, name, challenger, dsn=dsn, spec=spec, start=period[0], end=period[1]) == 120
    assert score_as_shadow(mlflow_server, name, challenger, dsn=dsn, spec=spec, start=period[0], end=period[1]) == 0
    state = evaluate(mlflow_server, name, dsn=dsn, test=SequentialTest(min_pairs=20, tuned_for=100), actor="test")
    assert state is not None and (state.status, state.challenger) == ("promoted", challenger)


def test_a_challenger_worse_than_the_answers_given_is_blocked(mlflow_server, database, settings, fitted,
                                                             rollout) -> None:
    spec, frame, _ = fitted
    name, champion, _ = rollout
    rows = frame.head(120)
    log_requests(database.dsn(), rows, spec, champion, rows[spec.target].to_numpy(), LOGGED_AT)  # answered exactly

    result = run(mlflow_server, database, settings, name, PERIOD)
    evaluation = check_result(result)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "replays worse than the answers given" in evaluation.description
    assert not result.asset_materializations_for_node("canary")
    assert current(mlflow_server, name).canary_share == 0.0


def test_an_empty_period_warns_without_blocking_and_a_reversed_one_fails(mlflow_server, database, settings,
                                                                         rollout) -> None:
    name, _, _ = rollout
    result = run(mlflow_server, database, settings, name, PERIOD)
    evaluation = check_result(result)
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert "nothing to replay" in evaluation.description
    assert current(mlflow_server, name).canary_share == 0.1

    reversed_period = run(mlflow_server, database, settings, name, {"start": "2026-03-08", "end": "2026-03-01"})
    assert not reversed_period.success
    assert "replay period must end after it starts" in str(reversed_period.all_events)
