"""The demo's reading of a failed initial backfill (only a refusal that kept an earlier champion is fine), of --shock,
and the pieces of its safe-rollout path: the canary job's config, the replay and gate lines, the worse challenger."""

import time
import uuid
from datetime import UTC, datetime

import dagster as dg
import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.base import clone
from test_serving_support import Champion, Server, champion, server_env  # noqa: F401 (fixture)

from price_platform.defs.resources import Dataset, Warehouse
from price_platform.defs.rollout.assets import canary, offline_replay
from price_platform.defs.rollout.checks import replay_not_worse
from price_platform.defs.rollout.resources import Rollout
from price_platform.demo import (
    DemoError,
    canary_run_config,
    gate_settled,
    gate_step,
    holdout_refusal,
    kept_champion,
    replay_step,
    rollout_state,
    shocked_month,
)
from price_platform.registry import tracking
from price_platform.registry.champion import load_version
from price_platform.rollout import SHADOW, gate, pairs, traffic
from price_platform.rollout.live_traffic import send_sales
from price_platform.rollout.mislabeled import (
    LABEL_FACTOR,
    fit_and_holdout_rows,
    register_mislabeled,
)
from price_platform.rollout.sequential import SequentialTest
from price_platform.training.dataset import KEY_COLUMNS, read_features
from price_platform.warehouse import connect
from price_platform_tests.rollout_support import (  # noqa: F401 (fixtures)
    database,
    feed,
    fitted,
    log_requests,
    rollout,
)

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def row(action: str, reason: str) -> tuple:
    return (NOW, action, "3", "4", reason, {})


def test_a_refusal_that_kept_an_earlier_champion_is_reported() -> None:
    decided = [row("refuse", "holdout_rmsle 0.14000 does not beat champion's 0.13500 by 0.0%")]
    assert kept_champion("3", decided) == "holdout_rmsle 0.14000 does not beat champion's 0.13500 by 0.0%"


def test_a_failed_backfill_without_an_earlier_champion_is_a_failure() -> None:
    assert kept_champion(None, [row("refuse", "version 1 has no holdout_rmsle metric")]) is None


def test_a_failed_backfill_without_a_refusal_is_a_failure() -> None:
    assert kept_champion("3", []) is None
    assert kept_champion("3", [row("promote", "no champion yet")]) is None


def test_the_shocked_month_is_counted_from_one_and_zero_means_none() -> None:
    months = ["2009-01", "2009-02", "2009-03"]
    assert shocked_month(months, 1) == "2009-01" and shocked_month(months, 3) == "2009-03"
    assert shocked_month(months, 0) is None


@pytest.mark.parametrize("number", [-1, 4])
def test_a_shock_outside_the_replay_is_refused_naming_the_months(number: int) -> None:
    with pytest.raises(DemoError, match=rf"--shock {number}: the replay has 3 months \(2009-01 .. 2009-03\); give 1 to 3, or 0 for none"):
        shocked_month(["2009-01", "2009-02", "2009-03"], number)


# --- the safe-rollout path ------------------------------------------------------------------------

def test_only_a_refusal_of_the_retrained_version_stops_its_rollout() -> None:
    decided = [row("refuse", "holdout_rmsle 0.15 does not beat 0.14"), (NOW, "promote", None, "3", "no champion yet", {})]
    assert holdout_refusal("4", decided) == "holdout_rmsle 0.15 does not beat 0.14"
    assert holdout_refusal("3", decided) is None
    assert holdout_refusal("5", []) is None


def test_the_canary_config_replays_the_period_and_sets_the_share_through_the_real_job(
        mlflow_server, database, settings, fitted, rollout) -> None:
    """The demo's run config, given to the canary_rollout assets: the period's requests replayed, the share set,
    and the summary line read from the materialization's metadata."""
    spec, frame, pipeline = fitted
    name, champion, challenger = rollout
    at = datetime(2026, 3, 2, 12, tzinfo=UTC)
    rows = frame.tail(60)
    log_requests(database.dsn(), rows, spec, champion, pipeline.predict(rows[spec.features]) * 1.3, at)
    config = canary_run_config(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC), 0.25)
    result = dg.materialize(
        [offline_replay, replay_not_worse, canary],
        resources={
            "rollout": Rollout(tracking_uri=mlflow_server, model_name=name),
            "warehouse": Warehouse(database_url=str(database.server_url.render_as_string(hide_password=False)),
                                   database_name=database.database_name),
            "dataset": Dataset(path=str(settings.dataset)),
        },
        run_config=config,
    )
    assert result.success
    metadata = {key: value.value for key, value in
                result.asset_materializations_for_node("offline_replay")[0].metadata.items()}
    share = traffic.current(mlflow_server, name).canary_share
    assert share == 0.25
    line = replay_step(metadata, share)
    assert line.startswith(f"offline replay of v{challenger}: RMSLE ")
    assert f"answered by v{champion} on 60 logged requests with their prices; not worse: canary share 25%" in line


def test_a_replay_that_blocked_the_canary_says_so() -> None:
    metadata = {"challenger_version": "4", "requests": 12, "answered_by": "2, 3", "champion_rmsle": 0.1,
                "challenger_rmsle": 0.3}
    assert replay_step(metadata, 0.0) == (
        "offline replay of v4: RMSLE 0.30000 vs 0.10000 answered by v2, v3 on 12 logged requests with their prices;"
        " worse: the blocking check replay_not_worse stopped the canary")


def test_the_gate_line_and_its_wait_follow_the_real_gates_row(mlflow_server, database, rollout) -> None:
    name, champion, challenger = rollout
    test = SequentialTest(min_pairs=50, tuned_for=300)
    assert rollout_state(database.dsn(), name, challenger, champion) is None
    assert gate_step(None, challenger, champion).startswith(f"sequential gate: never judged v{challenger}")
    gate.evaluate(mlflow_server, name, dsn=database.dsn(), test=test, actor="test")
    waiting = rollout_state(database.dsn(), name, challenger, champion)
    assert waiting[0] == gate.WAITING and not gate_settled(waiting[0], 0, 0)
    assert gate_step(waiting, challenger, champion) == (
        f"sequential gate: still waiting on v{challenger} after 0 pairs; waiting: no pairs yet")
    feed(database.dsn(), champion, challenger, scale=2.5, count=300, seed=3)  # the challenger's errors 2.5 times as large
    assert not gate_settled(gate.WAITING, 0, 300)
    gate.evaluate(mlflow_server, name, dsn=database.dsn(), test=test, actor="test")
    decided = rollout_state(database.dsn(), name, challenger, champion)
    assert decided[0] == gate.ROLLED_BACK and gate_settled(decided[0], int(decided[3]["pairs_seen"]), 300)
    assert gate_step(decided, challenger, champion).startswith(
        f"sequential gate: rolled v{challenger} back after {decided[1]} pairs; worse: live RMSLE ")


def test_a_mislabeled_challenger_is_fitted_on_its_window_with_scaled_prices(mlflow_server, database, fitted, rollout,
                                                                            settings) -> None:
    spec, frame, _ = fitted
    name, champion, _ = rollout
    features = frame.assign(record_id=range(len(frame)), arrival_seq=range(len(frame)),
                            partition_key=["2008-01-01"] * 300 + ["2008-02-01"] * (len(frame) - 300))
    features["sale_month"] = features["partition_key"]
    engine = sa.create_engine(database.url())
    try:
        features[[*KEY_COLUMNS, *spec.features, spec.target]].to_sql(
            "features", engine, schema="price_data", index=False, if_exists="replace")
        fit, after = fit_and_holdout_rows(read_features(engine, spec), "2008-01-01", "2008-01-01")
        assert len(fit) == 300 and len(after) == len(frame) - 300
        tags = {"train_start": "2008-01-01", "train_end": "2008-01-01"}
        for key, value in tags.items():
            tracking.client(mlflow_server).set_model_version_tag(name, champion, key, value)
        made = register_mislabeled(mlflow_server, name, champion, dsn=database.dsn(), engine=engine, spec=spec)
    finally:
        engine.dispose()
    assert traffic.current(mlflow_server, name).challenger == made.version
    honest = load_version(mlflow_server, name, champion, dsn=database.dsn()).pipeline
    refitted = clone(honest).fit(fit[spec.features], fit[spec.target])
    worse = load_version(mlflow_server, name, made.version, dsn=database.dsn()).pipeline
    ratio = np.median(worse.predict(after[spec.features]) / refitted.predict(after[spec.features]))
    assert ratio == pytest.approx(LABEL_FACTOR, rel=0.05)
    run = tracking.client(mlflow_server).get_run(made.run_id)
    assert run.data.tags["worse_on_purpose"] == f"version {champion} refitted on prices x{LABEL_FACTOR:g}"
    assert run.data.metrics["holdout_rmsle"] > 0.2


def test_the_demos_traffic_and_feedback_give_the_gate_its_pairs_through_a_served_api(champion, tmp_path) -> None:
    """Sales sent by ``send_sales`` to ``price-platform serve`` with a shadow: every answer's price comes back as
    feedback and pairs with the shadow's off-path score, as the gate reads them."""
    settings = champion.settings.model_copy(update={"model_name": f"demo-traffic-{uuid.uuid4().hex[:6]}"})
    found = Champion(settings, champion.spec, champion.pipeline, champion.train, champion.holdout,
                     champion.tracking_uri, champion.dsn)
    version = found.register()
    found.promote(version)
    shadow = found.register()
    tracking.client(found.tracking_uri).set_registered_model_alias(settings.model_name, SHADOW, shadow)
    sales = found.holdout.head(40)
    server = Server(server_env(settings), log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        deadline = time.monotonic() + 120
        while httpx.get(f"{server.url}/model-info").json()["rollout"]["shadow_version"] != shadow:
            assert time.monotonic() < deadline, "the API never loaded the shadow"
            time.sleep(0.5)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            report = send_sales(client, found.spec, sales)
        assert report.refused == 0 and report.answered_by == {version: 40} and report.fed_back == 40
        deadline = time.monotonic() + 120
        while True:
            with connect(found.dsn) as connection:
                found_pairs = pairs.paired_predictions(connection, version, shadow)
            ours = found_pairs[found_pairs["prediction_id"].astype(str).isin(logged_ids(found.dsn, version))]
            if len(ours) == 40 or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        server.stop()
    assert len(ours) == 40
    assert sorted(ours["actual"]) == sorted(sales[found.spec.target].astype(float))
    np.testing.assert_allclose(ours["challenger"], ours["champion"], rtol=1e-5)  # the same fit, registered twice
    assert report.describe() == f"40 requests (v{version}: 40), 0 refused, 40 prices fed back"


def logged_ids(dsn: str, version: str) -> set[str]:
    """Prediction ids of the requests ``version`` answered, as text."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select prediction_id::text from monitoring.predictions where model_version = %s", (version,))
        return {row[0] for row in cursor.fetchall()}
