"""The rollout domain in Dagster: definitions load, the gate and canary assets run, the sensor asks for a gate run."""

from __future__ import annotations

import dagster as dg

from price_platform.defs.resources import Warehouse
from price_platform.defs.rollout.assets import canary, rollout_gate
from price_platform.defs.rollout.resources import Rollout
from price_platform.defs.rollout.sensors import gate_on_feedback
from price_platform.rollout.traffic import current
from price_platform_tests.rollout_support import database, feed, fitted, rollout  # noqa: F401 (fixtures)


def resources(mlflow_server: str, database, name: str) -> dict[str, object]:
    return {
        "rollout": Rollout(tracking_uri=mlflow_server, model_name=name, min_pairs=20, tuned_for=200, max_pairs=3_000),
        "warehouse": Warehouse(database_url=str(database.server_url.render_as_string(hide_password=False)),
                               database_name=database.database_name),
    }


def test_definitions_hold_the_rollout_domain(settings) -> None:
    from price_platform.definitions import build_definitions

    repository = build_definitions(settings).get_repository_def()
    assert {dg.AssetKey("rollout_gate"), dg.AssetKey("canary")} <= set(repository.assets_defs_by_key)
    assert repository.get_sensor_def("gate_on_feedback").job_name == "judge_rollout"


def test_canary_config_then_gate_asset_promote_with_metadata(mlflow_server, database, rollout) -> None:
    name, champion, challenger = rollout
    bound = resources(mlflow_server, database, name)
    result = dg.materialize(
        [canary], resources=bound,
        run_config=dg.RunConfig(ops={"canary": {"config": {"share": 0.25}}}),
    )
    assert result.success
    assert current(mlflow_server, name).canary_share == 0.25
    assert result.asset_materializations_for_node("canary")[0].metadata["canary_share"].value == 0.25

    waiting = dg.materialize([rollout_gate], resources=bound)
    assert waiting.asset_materializations_for_node("rollout_gate")[0].metadata["status"].value == "waiting"

    feed(database.dsn(), champion, challenger, 0.6, 300, seed=11)
    decided = dg.materialize([rollout_gate], resources=bound)
    metadata = decided.asset_materializations_for_node("rollout_gate")[0].metadata
    assert (metadata["status"].value, metadata["decided_now"].value) == ("promoted", True)
    assert metadata["challenger_version"].value == challenger and metadata["pairs"].value >= 20
    assert current(mlflow_server, name).champion == challenger


def test_a_bad_canary_share_fails_the_run_and_changes_nothing(mlflow_server, database, rollout) -> None:
    name, _, _ = rollout
    result = dg.materialize(
        [canary], resources=resources(mlflow_server, database, name),
        run_config=dg.RunConfig(ops={"canary": {"config": {"share": 1.5}}}), raise_on_error=False,
    )
    assert not result.success
    assert "canary share must be a number from 0 to 1, got 1.5" in str(result.all_events)
    assert current(mlflow_server, name).canary_share == 0.0


def test_the_sensor_asks_for_a_gate_run_on_new_feedback_only(mlflow_server, database, rollout) -> None:
    name, champion, challenger = rollout
    bound = resources(mlflow_server, database, name)
    with dg.build_sensor_context(resources=bound) as context:
        first = gate_on_feedback(context)
    assert not first.run_requests and first.skip_reason.skip_message == "no feedback yet"
    feed(database.dsn(), champion, challenger, 1.0, 5, seed=12)
    with dg.build_sensor_context(resources=bound, cursor=first.cursor) as context:
        second = gate_on_feedback(context)
    assert len(second.run_requests) == 1 and second.run_requests[0].run_key.startswith(f"gate:{challenger}:5@")
    with dg.build_sensor_context(resources=bound, cursor=second.cursor) as context:
        third = gate_on_feedback(context)
    assert not third.run_requests and third.skip_reason.skip_message == "no new feedback"
