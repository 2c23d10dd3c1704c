"""The continuous-training loop on a real PostgreSQL: drift reports, retrain requests, live error, alerts.

These tests own a database of their own (``price_data.features`` is written here from the
bundled sample, the way the dbt mart lays it out), so that they never collide with the
feature tables the ingestion and dbt tests build in the session database.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from price_platform.datasets import load_dataset
from price_platform.defs.monitoring.assets import build_drift_report, live_performance
from price_platform.defs.monitoring.jobs import RETRAIN_JOB
from price_platform.defs.monitoring.resources import Monitoring
from price_platform.defs.monitoring.schedules import build_daily_drift
from price_platform.defs.monitoring.sensors import drift_event_key, retrain_on_drift
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.modeling import read_sample
from price_platform.monitoring import alerts, partitions
from price_platform.monitoring import live_performance as live
from price_platform.monitoring.metrics import PipelineCollector
from price_platform.postgres import PostgresServer
from price_platform.settings import DEFAULT_DATASET, Settings
from price_platform.warehouse import connect, migrate
from price_platform_tests.conftest import drop_databases, free_port

AREAS = ["gr_liv_area", "first_flr_sf", "second_flr_sf", "total_bsmt_sf", "lot_area", "garage_area", "bsmt_unf_sf"]
SHIFTED = "2009-06-01"
QUIET = "2009-05-01"


@pytest.fixture(scope="module")
def spec():
    return load_dataset(DEFAULT_DATASET)


@pytest.fixture(scope="module")
def sample(spec):
    return read_sample(spec)


@pytest.fixture(scope="module")
def platform(system_postgres_url, session_home, spec, sample):
    """Settings and server of a database of this module, with ``price_data.features`` from the sample.

    The month ``SHIFTED`` has its areas x1.6 and prices x1.8: the drift a retrain must follow.
    """
    name = f"pp_mon_{uuid.uuid4().hex[:8]}"
    settings = Settings(home=session_home, database_url=system_postgres_url, database_name=name)
    server = PostgresServer(server_url=make_url(system_postgres_url), database_name=name)
    server.ensure_databases()
    migrate(server.dsn())
    frame = sample.copy()
    frame["partition_key"] = [f"{y:04d}-{m:02d}-01" for y, m in zip(frame["year_sold"], frame["mo_sold"], strict=True)]
    frame["record_id"] = frame["sale_id"].astype(str)
    shifted = frame["partition_key"] == SHIFTED
    for column in [*AREAS, spec.target]:
        frame[column] = frame[column].astype(float)
        frame.loc[shifted, column] = frame.loc[shifted, column] * (1.8 if column == spec.target else 1.6)
    engine = sa.create_engine(server.url())
    frame[["record_id", "partition_key", *spec.features, spec.target]].to_sql(
        "features", engine, schema="price_data", index=False
    )
    engine.dispose()
    yield settings, server
    drop_databases(server)


def resources(settings: Settings, **monitoring) -> dict:
    return {
        "warehouse": Warehouse.from_settings(settings),
        "dataset": Dataset(path=str(settings.dataset)),
        "monitoring": Monitoring(tracking_uri=None, model_name="price-model", **monitoring),
    }


def drift_signal(instance: dg.DagsterInstance, partition: str, detected: bool, champion: str = "3") -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="drift_report", partition=partition,
            metadata={"drift_detected": detected, "champion_version": champion},
        )
    )


def evaluate(instance: dg.DagsterInstance, cursor: str | None, settings: Settings) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources(settings))
    return retrain_on_drift(context)


# --- drift report and the retrain it starts ----------------------------------------------


def test_a_shifted_month_is_reported_as_drift_and_starts_one_retrain(platform, spec):
    settings, server = platform
    asset = build_drift_report(spec)
    with dg.instance_for_test() as instance:
        result = dg.materialize([asset], partition_key=SHIFTED, instance=instance, resources=resources(settings))
        assert result.success
        metadata = result.asset_materializations_for_node("drift_report")[0].metadata
        assert metadata["drift_detected"].value is True
        assert metadata["target_drifted"].value is True
        assert "| gr_liv_area | numeric |" in metadata["moved_most"].value
        assert metadata["plot"].value.startswith("![drift](data:image/png;base64,")
        answer = evaluate(instance, None, settings)
        assert [request.run_key for request in answer.run_requests] == [drift_event_key("none", 0)]
        assert answer.run_requests[0].tags["price_platform/drift_partition"] == SHIFTED
        assert answer.run_requests[0].tags["price_platform/trigger"] == "drift"
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("select drift_detected, target_drifted from monitoring.drift_summaries where partition_key = %s",
                       (SHIFTED,))
        assert cursor.fetchall() == [(True, True)]
        cursor.execute("select count(*) from monitoring.drift_reports where partition_key = %s and drifted"
                       " and feature = any(%s)", (SHIFTED, AREAS[:3]))
        assert cursor.fetchone()[0] == 3


def test_a_quiet_month_is_reported_without_drift_and_starts_nothing(platform, spec):
    settings, _ = platform
    with dg.instance_for_test() as instance:
        result = dg.materialize([build_drift_report(spec)], partition_key=QUIET, instance=instance,
                                resources=resources(settings))
        metadata = result.asset_materializations_for_node("drift_report")[0].metadata
        assert metadata["drift_detected"].value is False
        answer = evaluate(instance, None, settings)
        assert not answer.run_requests
        assert "none past threshold" in answer.skip_reason.skip_message


def test_a_partition_without_rows_fails_the_run_and_stores_nothing(platform, spec):
    settings, server = platform
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("delete from price_data.features where partition_key = '2010-07-01'")
    with dg.instance_for_test() as instance:
        result = dg.materialize([build_drift_report(spec)], partition_key="2010-07-01", instance=instance,
                                resources=resources(settings), raise_on_error=False)
        assert not result.success
        failure = result.get_step_failure_events()[0].step_failure_data.error
        assert "partition 2010-07-01 has 0 feature rows" in failure.message
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*) from monitoring.drift_summaries where partition_key = '2010-07-01'")
        assert cursor.fetchone()[0] == 0


def test_fifty_drift_signals_in_a_row_request_one_retrain(platform):
    settings, _ = platform
    requests: list[dg.RunRequest] = []
    cursor = None
    with dg.instance_for_test() as instance:
        for number in range(50):
            drift_signal(instance, f"2009-{number % 12 + 1:02d}-01", detected=True)
            answer = evaluate(instance, cursor, settings)
            requests += answer.run_requests
            cursor = answer.cursor
        assert len(requests) == 1
        assert requests[0].run_key == drift_event_key("3", 0)
        # The retrain's outcome is recorded (here: the challenger refused); drift again is a new event.
        with connect(PostgresServer(make_url(settings.database_url), settings.database_name).dsn()) as connection:
            with connection.cursor() as sql:
                sql.execute(
                    "insert into model_registry.deployments (model_name, from_version, to_version, action, reason,"
                    " actor) values ('price-model', '3', '4', 'refuse', 'challenger worse on holdout', 'test')"
                    " returning id"
                )
                refusal = sql.fetchone()[0]
        drift_signal(instance, "2010-01-01", detected=True)
        again = evaluate(instance, cursor, settings)
        assert [request.run_key for request in again.run_requests] == [drift_event_key("3", refusal)]
        # A new champion is a new event too.
        drift_signal(instance, "2010-02-01", detected=True, champion="5")
        newer = evaluate(instance, again.cursor, settings)
        assert [request.run_key for request in newer.run_requests] == [drift_event_key("5", refusal)]


def test_the_daily_drift_schedule_checks_the_latest_partition_once_a_day(platform, spec):
    settings, _ = platform
    schedule = build_daily_drift(spec)
    monitoring = Monitoring(tracking_uri=None)
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 26, 3, 30, tzinfo=UTC),
        resources={"warehouse": Warehouse.from_settings(settings), "monitoring": monitoring},
    )
    assert "no champion yet" in schedule.evaluate_tick(context).skip_message


def test_new_sales_before_the_first_champion_start_no_drift_run(platform, spec):
    from price_platform.defs.monitoring.jobs import build_drift_job
    from price_platform.defs.monitoring.sensors import build_drift_on_new_sales

    sensor = build_drift_on_new_sales(build_drift_job())
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="raw_sales", partition=SHIFTED))
        context = dg.build_sensor_context(instance=instance, resources={"monitoring": Monitoring(tracking_uri=None)})
        answer = sensor(context)
    assert not answer.run_requests
    assert "no champion yet" in answer.skip_reason.skip_message
    assert answer.cursor is not None  # the load is passed over, not retried on every tick


def test_definitions_include_the_monitoring_loop():
    from price_platform.definitions import build_definitions

    repository = build_definitions(Settings()).get_repository_def()
    assert {"drift_check", RETRAIN_JOB, "daily_monitoring"} <= set(repository.job_names)
    assert {"retrain_on_drift", "drift_on_new_sales", "alert_on_run_failure"} <= {
        sensor.name for sensor in repository.sensor_defs
    }
    assert {"daily_drift", "daily_monitoring", "weekly_retrain"} <= {s.name for s in repository.schedule_defs}
    drift = repository.asset_graph.get(dg.AssetKey("drift_report"))
    assert dg.AssetKey("features") in drift.parent_keys
    drift_job = repository.get_job("drift_check")
    selected = {key.to_user_string() for key in drift_job.asset_layer.selected_asset_keys}
    assert {"drift_report", "features", "stg_price_data__sales"} <= selected
    assert "raw_sales" not in selected
    policy = repository.assets_defs_by_key[dg.AssetKey("drift_report")].op.retry_policy
    assert policy.max_retries >= 1 and policy.backoff == dg.Backoff.EXPONENTIAL


# --- prediction log partitions -----------------------------------------------------------


def _insert_prediction(cursor, created_at: datetime, record: dict, version: str = "3", prediction: float = 100.0):
    prediction_id = uuid.uuid4()
    cursor.execute(
        "insert into monitoring.predictions (prediction_id, created_at, model_version, features, prediction)"
        " values (%s, %s, %s, %s, %s)",
        (str(prediction_id), created_at, version, json.dumps(record), prediction),
    )
    return prediction_id


def test_month_partitions_take_over_rows_from_the_default_partition_and_retention_detaches(platform):
    _, server = platform
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        if not any(p.lower is None for p in partitions.attached_partitions(connection)):
            cursor.execute("create table monitoring.predictions_default partition of monitoring.predictions default")
        for day in (3, 17):
            _insert_prediction(cursor, datetime(2001, 3, day, 12, tzinfo=UTC), {"a": day})
    with connect(server.dsn()) as connection:
        created = partitions.ensure_month_partitions(connection, date(2001, 1, 5), date(2001, 4, 1))
        again = partitions.ensure_month_partitions(connection, date(2001, 1, 5), date(2001, 4, 1))
    assert created == [f"predictions_y2001m0{m}" for m in (1, 2, 3, 4)]
    assert again == []
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*) from monitoring.predictions_y2001m03")
        assert cursor.fetchone()[0] == 2
        cursor.execute("select count(*) from monitoring.predictions_default where created_at < '2001-05-01'")
        assert cursor.fetchone()[0] == 0
        with pytest.raises(ValueError, match="keep_months must be at least 1, got 0"):
            partitions.detach_older_than(connection, 0, date(2001, 5, 15))
        detached = partitions.detach_older_than(connection, 3, date(2001, 5, 15))
        assert detached == ["predictions_y2001m01", "predictions_y2001m02"]
        cursor.execute("select count(*) from monitoring.predictions where created_at < '2001-05-01'")
        assert cursor.fetchone()[0] == 2  # March stays attached; the detached months held no rows
        cursor.execute("select to_regclass('monitoring.predictions_y2001m01') is not null")
        assert cursor.fetchone()[0]


def test_a_failed_partition_move_leaves_the_default_rows_in_place(platform):
    """A name clash makes creating the month fail: the transaction rolls back, no row is lost."""
    _, server = platform
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        if not any(p.lower is None for p in partitions.attached_partitions(connection)):
            cursor.execute("create table monitoring.predictions_default partition of monitoring.predictions default")
        _insert_prediction(cursor, datetime(2002, 6, 9, tzinfo=UTC), {"b": 1})
        cursor.execute("create table monitoring.predictions_y2002m06 (x int)")  # squats on the name
    with pytest.raises(Exception, match="predictions_y2002m06"), connect(server.dsn()) as connection:
        partitions.ensure_month_partitions(connection, date(2002, 6, 1), date(2002, 6, 1))
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*) from monitoring.predictions where created_at >= '2002-06-01'"
                       " and created_at < '2002-07-01'")
        assert cursor.fetchone()[0] == 1


# --- live performance --------------------------------------------------------------------


def _records(spec, rows: pd.DataFrame) -> list[dict]:
    return [
        {name: (None if pd.isna(row[name]) else (float(row[name]) if name in spec.numeric else row[name]))
         for name in spec.features}
        for _, row in rows.iterrows()
    ]


def test_live_performance_joins_feedback_and_later_sales_and_alerts_on_an_accuracy_drop(platform, spec, sample, caplog):
    settings, server = platform
    now = datetime.now(UTC)
    sold = sample[(sample["year_sold"] == 2008) & (sample["mo_sold"] == 3)].head(6)
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        partitions.ensure_month_partitions(connection, now.date() - timedelta(days=21), now.date())
        records = _records(spec, sold)
        prices = sold[spec.target].tolist()
        # three predictions answered by later sales (30% too high), three by feedback (exact)
        for record, price in zip(records[:3], prices[:3], strict=True):
            _insert_prediction(cursor, now, record, version="7", prediction=price * 1.3)
        for record, price in zip(records[3:], prices[3:], strict=True):
            prediction_id = _insert_prediction(cursor, now - timedelta(days=14), record, version="7", prediction=price)
            cursor.execute("insert into monitoring.actuals (prediction_id, actual) values (%s, %s)",
                           (str(prediction_id), price))
        cursor.execute("insert into monitoring.model_metrics (model_version, metric, value, source)"
                       " values ('7', 'mape', 0.05, 'holdout')")
    webhook_calls: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            webhook_calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = HTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{hook.server_port}/alert"
        with dg.instance_for_test() as instance, caplog.at_level("ERROR", logger="price_platform.alerts"):
            result = dg.materialize([live_performance], instance=instance,
                                    resources=resources(settings, alert_webhook_url=url),
                                    selection=[dg.AssetKey("live_performance")])
        metadata = result.asset_materializations_for_node("live_performance")[0].metadata
    finally:
        hook.shutdown()
    assert metadata["by_feedback"].value == 3 and metadata["by_later_sale"].value == 3
    assert metadata["accuracy_drops"].value == 1
    assert "ALERT model accuracy dropped" in caplog.text
    assert webhook_calls and webhook_calls[0]["detail"]["model_version"] == "7"
    with connect(server.dsn()) as connection:
        stored = live.stored_errors(connection)
    mape = stored[stored["metric"] == "mape"].set_index("week")["value"]
    assert sorted(mape.round(6).tolist()) == [0.0, 0.3]
    # recomputing replaces the weeks instead of adding rows
    with connect(server.dsn()) as connection:
        live.store(connection, live.weekly_errors(live.matched_predictions(connection, spec)))
        assert len(live.stored_errors(connection)) == len(stored)


def test_an_unreachable_webhook_is_logged_and_does_not_raise(caplog):
    with caplog.at_level("ERROR", logger="price_platform.alerts"):
        delivered = alerts.send_alert("drift", {"partition": "2009-06-01"}, f"http://127.0.0.1:{free_port()}/x",
                                      timeout=2)
    assert delivered is False
    assert "ALERT drift" in caplog.text and "alert webhook" in caplog.text


# --- exporter ----------------------------------------------------------------------------


def test_the_exporter_reports_a_database_it_cannot_reach_instead_of_failing():
    collector = PipelineCollector(f"postgresql://postgres@127.0.0.1:{free_port()}/x", None, "price-model")
    families = {family.name: family for family in collector.collect()}
    assert [(s.labels, s.value) for s in families["pipeline_source_up"].samples] == [({"source": "postgresql"}, 0)]


def test_the_exporter_reads_the_latest_drift_report(platform, spec):
    settings, server = platform
    with dg.instance_for_test() as instance:
        dg.materialize([build_drift_report(spec)], partition_key=SHIFTED, instance=instance,
                       resources=resources(settings))
    families = {family.name: family for family in PipelineCollector(server.dsn(), None, "price-model").collect()}
    assert families["drift_detected"].samples[0].value == 1.0
    scores = {sample.labels["feature"]: sample.value for sample in families["drift_score"].samples}
    assert set(scores) == {*spec.features, spec.target}
    assert scores["gr_liv_area"] > 0.2


# --- replay ------------------------------------------------------------------------------


def test_replay_drops_months_in_order_as_files_the_landing_sensor_reads(tmp_path, platform, spec, sample):
    from price_platform.ingestion.records import PARTITION_KEY, typed_records
    from price_platform.ingestion.sources import read_file
    from price_platform.monitoring import replay

    settings, server = platform
    local = settings.model_copy(update={"landing_dir": tmp_path / "landing"})
    outcomes = replay.replay(local, server.dsn(), 3, "2009-01", wait=False)
    assert [o.month for o in outcomes] == ["2009-01", "2009-02", "2009-03"]
    files = sorted(path.name for path in (tmp_path / "landing").iterdir())
    assert files == ["sales_2009_01.csv", "sales_2009_02.csv", "sales_2009_03.csv"]
    records = typed_records(spec, read_file(tmp_path / "landing" / "sales_2009_02.csv"), None)
    assert set(records[PARTITION_KEY]) == {"2009-02-01"}
    assert len(records) == outcomes[1].rows == len(replay.month_rows(spec, sample, "2009-02"))
    text = replay.summary(outcomes, [])
    assert "2009-03" in text and "registry decisions: none" in text


def test_a_shocked_month_lands_with_its_prices_multiplied_and_is_marked_in_the_summary(tmp_path, platform, spec, sample):
    from price_platform.monitoring import replay

    settings, server = platform
    local = settings.model_copy(update={"landing_dir": tmp_path / "landing"})
    outcomes = replay.replay(local, server.dsn(), 2, "2009-01", wait=False, shock="2009-02")
    assert [o.shocked for o in outcomes] == [False, True]
    for month, factor in (("2009-01", 1.0), ("2009-02", replay.SHOCK_FACTOR)):
        landed = pd.read_csv(tmp_path / "landing" / f"sales_{month.replace('-', '_')}.csv")
        original = replay.month_rows(spec, sample, month)[spec.target].to_numpy(dtype=float)
        assert np.array_equal(landed[spec.target].to_numpy(dtype=float), np.round(original * factor))
    lines = replay.summary(outcomes, []).splitlines()
    assert "simulated shock" in lines[2] and "simulated shock" not in lines[1]


def test_replay_refuses_a_shock_outside_the_replayed_months(tmp_path, platform):
    from price_platform.monitoring import replay

    settings, server = platform
    local = settings.model_copy(update={"landing_dir": tmp_path / "landing"})
    with pytest.raises(replay.ReplayError, match=r"the shocked month 2009-05 is not one of the replayed months \(2009-01 .. 2009-02\)"):
        replay.replay(local, server.dsn(), 2, "2009-01", wait=False, shock="2009-05")
    assert not (tmp_path / "landing").exists()


def test_replay_refuses_a_month_outside_the_history_and_a_platform_that_has_it_all(tmp_path, platform):
    from price_platform.monitoring import replay

    settings, server = platform
    local = settings.model_copy(update={"landing_dir": tmp_path / "landing"})
    with pytest.raises(replay.ReplayError, match=r"2012-01 is not a month of the history \(2006-01 .. 2010-07\)"):
        replay.replay(local, server.dsn(), 1, "2012-01", wait=False)
    with pytest.raises(replay.ReplayError, match="already holds every month of the history"):
        replay.first_month_to_replay(server.dsn(), ["2006-01", "2009-12"])  # the features reach 2010
    assert not (tmp_path / "landing").exists()


def test_replay_names_the_stage_a_month_stopped_at(platform):
    from price_platform.monitoring import replay

    _, server = platform
    with pytest.raises(replay.ReplayError, match=r"2009-04 stopped at stage 'landed'"):
        replay.wait_for_drift(server.dsn(), "2009-04-01", datetime.now(UTC), timeout=0.5, poll=0.2)


# --- the loop against a real registry: drift on the champion's window, retrain, worse challenger refused ---


def test_drift_against_the_champions_window_retrains_and_a_worse_challenger_is_refused(
    platform, spec, sample, mlflow_server
):
    """The retrain's own steps (train, register, gate) are the registry's; until the training
    domain's ``retrain`` job exists they are called here for the run the sensor requested."""
    import numpy as np
    from mlflow import MlflowClient

    from price_platform.modeling import build_ridge_baseline
    from price_platform.registry.promotion import PromotionRefused, promote
    from price_platform.registry.versions import register_candidate

    settings, server = platform
    model_name = f"loop-{uuid.uuid4().hex[:6]}"
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    train = sample[sample["year_sold"] <= 2008]
    holdout = sample[sample["year_sold"] == 2009]

    def register(alpha: float) -> str:
        pipeline = build_ridge_baseline(spec, alpha=alpha).fit(train[spec.features], train[spec.target])
        predicted = pipeline.predict(holdout[spec.features])
        rmsle = float(np.sqrt(np.mean((np.log1p(predicted) - np.log1p(holdout[spec.target])) ** 2)))
        mape = float(np.mean(np.abs(predicted - holdout[spec.target]) / holdout[spec.target]))
        version = register_candidate(mlflow_server, model_name, pipeline, train[spec.features], dsn=server.dsn(),
                                     interval_log_halfwidth=0.2, data_version="test",
                                     metrics={"holdout_rmsle": rmsle, "holdout_mape": mape}).version
        client.set_model_version_tag(model_name, version, "train_start", "2006-01-01")
        client.set_model_version_tag(model_name, version, "train_end", "2008-12-01")
        return version

    champion = register(alpha=10.0)
    promote(mlflow_server, model_name, champion, dsn=server.dsn(), actor="test")
    monitoring = {"tracking_uri": mlflow_server, "model_name": model_name}
    with dg.instance_for_test() as instance:
        run = dg.materialize(
            [build_drift_report(spec)], partition_key=SHIFTED, instance=instance,
            resources={**resources(settings), "monitoring": Monitoring(**monitoring)},
        )
        metadata = run.asset_materializations_for_node("drift_report")[0].metadata
        assert metadata["champion_version"].value == champion
        assert metadata["reference_window"].value == "2006-01-01 .. 2008-12-01"
        assert metadata["drift_detected"].value is True

        def evaluate_with(cursor):
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor,
                resources={"warehouse": Warehouse.from_settings(settings), "monitoring": Monitoring(**monitoring)},
            )
            return retrain_on_drift(context)

        first = evaluate_with(None)
        assert len(first.run_requests) == 1
        # the requested retrain: a deliberately worse challenger (ridge shrunk to almost a constant)
        challenger = register(alpha=1e7)
        with pytest.raises(PromotionRefused, match="does not beat champion"):
            promote(mlflow_server, model_name, challenger, dsn=server.dsn(), actor="retrain")
        assert client.get_model_version_by_alias(model_name, "champion").version == champion
        with connect(server.dsn()) as connection, connection.cursor() as cursor:
            cursor.execute("select action, from_version, to_version from model_registry.deployments"
                           " where model_name = %s order by id", (model_name,))
            assert cursor.fetchall() == [("promote", None, champion), ("refuse", champion, challenger)]
        # drift persists on the next month: a new event after the refusal, so one more retrain
        dg.materialize([build_drift_report(spec)], partition_key=SHIFTED, instance=instance,
                       resources={**resources(settings), "monitoring": Monitoring(**monitoring)})
        second = evaluate_with(first.cursor)
        assert len(second.run_requests) == 1
        assert second.run_requests[0].run_key != first.run_requests[0].run_key
        # live accuracy of the champion, measured against its training run's holdout MAPE
        with connect(server.dsn()) as connection, connection.cursor() as cursor:
            partitions.ensure_month_partitions(connection, datetime.now(UTC).date(), datetime.now(UTC).date())
            record = _records(spec, holdout.head(1))[0]
            prediction_id = _insert_prediction(cursor, datetime.now(UTC), record, version=champion, prediction=1.0)
            cursor.execute("insert into monitoring.actuals (prediction_id, actual) values (%s, 200000)",
                           (str(prediction_id),))
        live_run = dg.materialize([live_performance], instance=instance,
                                  resources={**resources(settings), "monitoring": Monitoring(**monitoring)})
        assert live_run.asset_materializations_for_node("live_performance")[0].metadata["accuracy_drops"].value >= 1
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("select value from monitoring.model_metrics where model_version = %s and source = 'holdout'",
                       (champion,))
        stored = cursor.fetchall()
    expected = client.get_run(client.get_model_version(model_name, champion).run_id).data.metrics["holdout_mape"]
    assert stored == [(pytest.approx(expected),)]


def test_the_partitions_asset_makes_the_coming_months(platform):
    from price_platform.defs.monitoring.assets import prediction_log_partitions

    settings, server = platform
    today = datetime.now(UTC).date()
    with dg.instance_for_test() as instance:
        result = dg.materialize([prediction_log_partitions], instance=instance,
                                resources=resources(settings, partitions_ahead=2))
    metadata = result.asset_materializations_for_node("prediction_log_partitions")[0].metadata
    with connect(server.dsn()) as connection:
        names = {p.name for p in partitions.attached_partitions(connection)}
    wanted = {partitions.partition_name(partitions.month_start(today, ahead)) for ahead in range(3)}
    assert wanted <= names
    assert "predictions_default" in metadata["partitions"].value


def test_prediction_drift_compares_the_champions_answers_since_the_last_report_with_earlier_ones(
    platform, spec, sample
):
    from price_platform.monitoring import reports

    _, server = platform
    now = datetime.now(UTC)
    with connect(server.dsn()) as connection, connection.cursor() as cursor:
        partitions.ensure_month_partitions(connection, (now - timedelta(days=3)).date(), (now + timedelta(days=1)).date())
        cursor.execute(
            "insert into monitoring.drift_summaries (report_id, partition_key, reference_rows, current_rows,"
            " features_checked, features_drifted, drifted_share, drift_detected, created_at)"
            " values (%s, '2009-01-01', 1, 1, 1, 0, 0, false, %s)",
            (str(uuid.uuid4()), now - timedelta(days=1)),
        )
        for number in range(60):
            _insert_prediction(cursor, now - timedelta(days=2, minutes=number), {"n": number}, "p9", 150_000 + 900 * number)
            _insert_prediction(cursor, now + timedelta(minutes=number), {"n": number}, "p9", 260_000 + 900 * number)
        _insert_prediction(cursor, now + timedelta(minutes=1), {"n": 0}, "other-version", 1.0)
    with connect(server.dsn()) as connection:
        before, after = reports.read_predictions(connection, "p9")
        assert reports.read_predictions(connection, None) is None
    assert len(before) == len(after) == 60
    frame = sample[sample["year_sold"] == 2008]
    thresholds = reports.Thresholds(psi=0.2, share=0.3)
    report = reports.measure(spec, frame, frame, partition_key="2008-01-01", model_version="p9",
                             thresholds=thresholds, predictions=(before, after))
    assert report.prediction["drifted"] and report.drift_detected and not report.target_drifted
    few = reports.measure(spec, frame, frame, partition_key="2008-01-01", model_version="p9",
                          thresholds=thresholds, predictions=(before, after[:10]))
    assert few.prediction is None and not few.drift_detected
