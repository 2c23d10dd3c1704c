"""The sequential gate: its decisions on small simulated data, and its actions on a real registry and database."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from price_platform.registry import CHALLENGER, CHAMPION, tracking
from price_platform.registry.promotion import deployments
from price_platform.rollout import SHADOW
from price_platform.rollout.gate import PROMOTED, ROLLED_BACK, WAITING, evaluate
from price_platform.rollout.sequential import Decision, SequentialTest
from price_platform.rollout.traffic import current, set_canary, set_shadow
from price_platform_tests.rollout_support import database, feed, fitted, rollout  # noqa: F401 (fixtures)

SMALL = SequentialTest(alpha=0.05, min_pairs=20, tuned_for=200, max_pairs=3_000)


def simulated(rng: np.random.Generator, pairs: int, challenger_scale: float) -> np.ndarray:
    """Paired differences of squared log errors, champion RMSLE 0.13, correlated errors."""
    champion = rng.standard_normal(pairs)
    challenger = (0.8 * champion + 0.6 * rng.standard_normal(pairs)) * challenger_scale
    return 0.13**2 * (champion**2 - challenger**2)


def test_a_much_better_challenger_is_promoted_and_a_worse_one_rolled_back() -> None:
    rng = np.random.default_rng(7)
    better = SMALL.decide(simulated(rng, 3_000, 0.7))
    assert better.decision is Decision.PROMOTE
    assert 20 <= better.pairs < 3_000 and better.lower > 0
    worse = SMALL.decide(simulated(rng, 3_000, 1.4))
    assert worse.decision is Decision.ROLLBACK
    assert worse.upper < 0 and worse.pairs < 3_000


def test_the_gate_waits_below_its_minimum_and_while_the_interval_holds_zero() -> None:
    rng = np.random.default_rng(8)
    assert SMALL.decide(np.full(19, 0.01)).decision is Decision.WAIT  # clearly better, but too few pairs
    assert SMALL.decide(np.full(20, 0.01)).decision is Decision.PROMOTE
    equal = SMALL.decide(simulated(rng, 300, 1.0))
    assert equal.decision is Decision.WAIT and equal.lower < 0 < equal.upper and equal.pairs == 300


def test_an_equal_challenger_is_rolled_back_at_the_budget() -> None:
    outcome = SequentialTest(min_pairs=20, tuned_for=200, max_pairs=500).decide(np.zeros(800))
    assert (outcome.decision, outcome.pairs, outcome.seen) == (Decision.ROLLBACK, 500, 800)


def test_the_decision_is_taken_at_the_first_crossing() -> None:
    rng = np.random.default_rng(9)
    stream = simulated(rng, 3_000, 0.7)
    first = SMALL.decide(stream)
    again = SMALL.decide(stream[: first.pairs])
    assert (again.decision, again.pairs, again.lower) == (first.decision, first.pairs, first.lower)
    assert SMALL.decide(stream[: first.pairs - 1]).decision is Decision.WAIT


def test_the_confidence_sequence_narrows_and_covers_the_mean() -> None:
    rng = np.random.default_rng(10)
    stream = rng.normal(0.5, 2.0, 5_000)
    lower, upper = SequentialTest().bounds(stream)
    assert np.isnan(lower[0]) and np.isnan(upper[0])
    assert np.all(lower[1:] <= upper[1:])
    assert upper[-1] - lower[-1] < (upper[99] - lower[99]) / 4
    assert lower[-1] < 0.5 < upper[-1]


def test_bad_input_is_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match="finite numbers"):
        SMALL.decide(np.array([0.1, np.nan, 0.2]))
    with pytest.raises(ValueError, match="alpha must be in"):
        SequentialTest(alpha=1.5)
    with pytest.raises(ValueError, match="max_pairs .* at least min_pairs"):
        SequentialTest(min_pairs=100, max_pairs=10)
    assert SMALL.decide(np.array([])).decision is Decision.WAIT


# --- against MLflow and PostgreSQL ----------------------------------------------------------------


def test_a_better_challenger_is_promoted_through_the_registry(mlflow_server, database, rollout) -> None:
    name, champion, challenger = rollout
    set_shadow(mlflow_server, name, challenger, dsn=database.dsn(), actor="test")
    set_canary(mlflow_server, name, 0.1, dsn=database.dsn(), actor="test")
    feed(database.dsn(), champion, challenger, 0.6, 300, seed=1)
    state = evaluate(mlflow_server, name, dsn=database.dsn(), test=SMALL, actor="gate")
    assert state is not None and (state.status, state.acted) == (PROMOTED, True)
    assert state.metrics["challenger_live_rmsle"] < state.metrics["champion_live_rmsle"]
    traffic = current(mlflow_server, name)
    assert (traffic.champion, traffic.challenger, traffic.shadow, traffic.canary_share) == (challenger, None, None, 0.0)
    last = deployments(database.dsn(), name)[-1]
    assert (last.action, last.from_version, last.to_version, last.id) == ("promote", champion, challenger,
                                                                        state.deployment_id)
    assert last.reason.startswith("sequential gate: better: live RMSLE")
    assert evaluate(mlflow_server, name, dsn=database.dsn(), test=SMALL, actor="gate") is None  # nothing to judge


def test_a_worse_challenger_is_rolled_back_and_the_champion_kept(mlflow_server, database, rollout) -> None:
    name, champion, challenger = rollout
    set_shadow(mlflow_server, name, challenger, dsn=database.dsn(), actor="test")
    set_canary(mlflow_server, name, 0.2, dsn=database.dsn(), actor="test")
    feed(database.dsn(), champion, challenger, 1.6, 300, seed=2)
    state = evaluate(mlflow_server, name, dsn=database.dsn(), test=SMALL, actor="gate")
    assert state is not None and (state.status, state.acted) == (ROLLED_BACK, True)
    traffic = current(mlflow_server, name)
    assert (traffic.champion, traffic.challenger, traffic.shadow, traffic.canary_share) == (champion, None, None, 0.0)
    last = deployments(database.dsn(), name)[-1]
    assert (last.action, last.to_version) == ("refuse", challenger)
    assert last.reason.startswith("sequential gate: worse: live RMSLE")


def test_the_gate_waits_without_enough_pairs_and_changes_nothing(mlflow_server, database, rollout) -> None:
    name, champion, challenger = rollout
    set_shadow(mlflow_server, name, challenger, dsn=database.dsn(), actor="test")
    feed(database.dsn(), champion, challenger, 0.6, 10, seed=3)
    state = evaluate(mlflow_server, name, dsn=database.dsn(), test=SMALL, actor="gate")
    assert state is not None and (state.status, state.pairs, state.acted) == (WAITING, 10, False)
    client = tracking.client(mlflow_server)
    assert tracking.version_by_alias(client, name, CHAMPION).version == champion
    assert tracking.version_by_alias(client, name, CHALLENGER).version == challenger
    assert tracking.version_by_alias(client, name, SHADOW).version == challenger
    assert [d.action for d in deployments(database.dsn(), name)] == ["promote"]


def test_two_gates_deciding_at_once_promote_exactly_once(mlflow_server, database, rollout) -> None:
    name, champion, challenger = rollout
    feed(database.dsn(), champion, challenger, 0.6, 300, seed=4)
    start = threading.Barrier(2)
    states = []

    def gate(actor: str) -> None:
        start.wait()
        states.append(evaluate(mlflow_server, name, dsn=database.dsn(), test=SMALL, actor=actor))

    threads = [threading.Thread(target=gate, args=(f"gate-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The second gate ran after the first had promoted: no challenger was left to judge.
    decided = [state for state in states if state is not None]
    assert len(states) == 2 and len(decided) == 1
    assert (decided[0].status, decided[0].acted) == (PROMOTED, True)
    assert [(d.action, d.to_version) for d in deployments(database.dsn(), name)] == [
        ("promote", champion), ("promote", challenger)
    ]
    assert tracking.version_by_alias(tracking.client(mlflow_server), name, CHAMPION).version == challenger
