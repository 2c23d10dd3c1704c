"""Prometheus configuration, alert rules and dashboards, checked by promtool and by a real Prometheus.

The live test runs the real services: the prediction API (``serving.app``, serving a small
registered champion, sent a few requests) and the pipeline exporter (reading drift reports
and model metrics stored in the test database, and the MLflow registry). A real Prometheus
scrapes both; every query of every dashboard panel and alert rule is then evaluated through
its HTTP API and must not error, and every metric it names must be one the services export.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from price_platform_tests.conftest import free_port, wait_for_port, which

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "grafana" / "prometheus"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
MODEL_NAME = "prometheus-test-model"

#: PromQL words that are not metric names.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan",
}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords and label names left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expression)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end():].lstrip().startswith("(") or match.group().lower() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    """(dashboard / panel, expression) of every panel target of every provisioned dashboard."""
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{board['title']} / {panel['title']}", target["expr"]))
    return found


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [(f"alert {rule['alert']}", rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def alert_expression(name: str) -> str:
    return next(expression for where, expression in alert_queries() if where == f"alert {name}")


def test_metric_names_are_read_from_promql():
    expression = (
        'sum by (endpoint) (rate(http_requests_total{status=~"5.."}[5m])) / on (job) group_left '
        "histogram_quantile(0.95, sum by (le) (rate(prediction_latency_seconds_bucket[5m]))) > bool 0.2"
    )
    assert metric_names(expression) == {"http_requests_total", "prediction_latency_seconds_bucket"}
    assert metric_names("time() - last_successful_training_timestamp_seconds") == {
        "last_successful_training_timestamp_seconds"
    }


def test_every_dashboard_has_panels_with_queries():
    titles = {json.loads(path.read_text())["title"] for path in DASHBOARDS}
    assert titles == {"System Overview", "Model Performance", "Data Quality", "Business Metrics"}
    panels = {panel for panel, _ in dashboard_queries()}
    for wanted in ("Prediction volume", "Model accuracy trend", "Feature drift heatmap", "Error rate by endpoint",
                   "P95 latency", "CPU use"):
        assert any(wanted in panel for panel in panels), wanted


def test_promtool_accepts_the_config_and_the_rules_and_the_rule_tests_pass():
    promtool = which("promtool")
    for command in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        result = subprocess.run([promtool, *command], cwd=PROMETHEUS_DIR, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"promtool {' '.join(command)}:\n{result.stdout}\n{result.stderr}"


def test_promtool_rejects_a_broken_rule(tmp_path):
    promtool = which("promtool")
    broken = tmp_path / "alerts.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(up[5m]\n")
    result = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "Broken" in result.stdout + result.stderr or "parse error" in (result.stdout + result.stderr)


def test_rule_tests_fail_when_an_alert_is_expected_that_does_not_fire(tmp_path):
    """The promtool rule tests can fail: expecting DataDriftDetected while drift_detected is 0."""
    promtool = which("promtool")
    (tmp_path / "alerts.yml").write_text((PROMETHEUS_DIR / "alerts.yml").read_text())
    (tmp_path / "wrong_test.yml").write_text(
        "rule_files: [alerts.yml]\nevaluation_interval: 1m\ntests:\n"
        "  - interval: 1m\n    input_series:\n      - series: 'drift_detected{job=\"pipeline\"}'\n"
        "        values: '0 0 0'\n    alert_rule_test:\n      - eval_time: 2m\n        alertname: DataDriftDetected\n"
        "        exp_alerts:\n          - exp_labels: {severity: warning, job: pipeline}\n"
    )
    result = subprocess.run([promtool, "test", "rules", "wrong_test.yml"], cwd=tmp_path, capture_output=True,
                            text=True, check=False)
    assert result.returncode != 0


# --- the live stack ----------------------------------------------------------------------


def _records(spec, sample, count: int) -> list[dict]:
    records = []
    for _, row in sample.head(count).iterrows():
        record = {}
        for name, column in spec.numeric.items():
            value = row[name]
            record[name] = None if value is None or (isinstance(value, float) and math.isnan(value)) else (
                int(value) if column.integer else float(value)
            )
        for name in spec.categorical:
            record[name] = None if row[name] is None else str(row[name])
        records.append(record)
    return records


@pytest.fixture(scope="module")
def champion(mlflow_server, settings, postgres):
    """A small ridge pipeline registered and aliased ``champion`` in the test MLflow server."""
    from mlflow import MlflowClient

    from price_platform.datasets import load_dataset
    from price_platform.modeling import build_ridge_baseline, read_sample
    from price_platform.registry.versions import register_candidate

    spec = load_dataset(settings.dataset)
    sample = read_sample(spec)
    pipeline = build_ridge_baseline(spec).fit(sample[spec.features], sample[spec.target])
    version = register_candidate(
        mlflow_server, MODEL_NAME, pipeline, sample[spec.features], dsn=postgres.dsn(), interval_log_halfwidth=0.2, data_version="test",
        metrics={"holdout_mape": 0.12},
    )
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    client.set_registered_model_alias(MODEL_NAME, "champion", version.version)
    return spec, sample, version.version


@pytest.fixture(scope="module")
def stored_monitoring_rows(postgres, champion):
    """Rows the exporter reads: a drift report, model metrics, a sales load, this month's log partition."""
    from price_platform.monitoring import partitions, reports
    from price_platform.warehouse import connect

    spec, sample, version = champion
    report = reports.measure(
        spec, sample[sample["year_sold"] <= 2008], sample[sample["year_sold"] == 2010], partition_key="2010-01-01",
        model_version=version, thresholds=reports.Thresholds(psi=0.2, share=0.3),
    )
    today = datetime.now(UTC).date()
    with connect(postgres.dsn()) as connection:
        partitions.ensure_month_partitions(connection, today, partitions.month_start(today, 1))
        reports.save(connection, report)
        with connection.cursor() as cursor:
            cursor.execute(
                "insert into monitoring.model_metrics (model_version, period_start, metric, value, source) values"
                " (%s, null, 'mape', 0.12, 'holdout'), (%s, date_trunc('week', now())::date, 'mape', 0.15, 'live')",
                (version, version),
            )
            cursor.execute(
                "insert into monitoring.model_metrics (model_version, period_start, metric, value, source, segment)"
                " values (%(v)s, date_trunc('week', now())::date, 'rmsle', 0.14, 'live', null),"
                " (%(v)s, date_trunc('month', now())::date, 'rmsle', 0.17, 'estimated', null),"
                " (%(v)s, date_trunc('month', now())::date, 'rmsle_lower', 0.12, 'estimated', null),"
                " (%(v)s, date_trunc('month', now())::date, 'rmsle_upper', 0.22, 'estimated', null),"
                " (%(v)s, now()::date, 'interval_coverage', 0.81, 'live', null),"
                " (%(v)s, now()::date, 'interval_coverage', 0.93, 'live', 'bldg_type=1Fam'),"
                " (%(v)s, now()::date, 'interval_width', 61000, 'live', null),"
                " (%(v)s, now()::date, 'interval_coverage_nominal', 0.9, 'live', null)",
                {"v": version},
            )
            cursor.execute(
                "insert into price_data.loads (load_id, partition_key, source, rows_loaded, rows_rejected)"
                " values (%s, '2010-01-01', 'landing', 120, 3)",
                (str(uuid.uuid4()),),
            )
    return report


@pytest.fixture(scope="module")
def api(settings, mlflow_server, champion, postgres, session_home):
    """The real prediction API (uvicorn, one worker) serving the champion, on a free port."""
    pytest.importorskip("serving.app", reason="the prediction API is not built yet")
    port = free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PRICE_PLATFORM_HOME": str(session_home),
        "PRICE_PLATFORM_DATABASE_URL": settings.database_url,
        "PRICE_PLATFORM_DATABASE_NAME": settings.database_name,
        "PRICE_PLATFORM_MLFLOW_TRACKING_URI": mlflow_server,
        "PRICE_PLATFORM_MODEL_NAME": MODEL_NAME,
        "PRICE_PLATFORM_AUTH_ENABLED": "false",
        # MLflow 3.17 resolves ``models:/`` download URIs on the default registry, not the client's:
        # point the default at the test server too.
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_REGISTRY_URI": mlflow_server,
    }
    env.pop("PRICE_PLATFORM_REDIS_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = session_home / "prometheus-test-api.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serving.app:app_from_environment", "--factory",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
    try:
        wait_for_port(port, timeout=120, process=process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/ready").status_code != 200:
            assert time.monotonic() < deadline, f"API never ready:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url, port
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def exporter(postgres, mlflow_server, stored_monitoring_rows):
    from price_platform.monitoring.metrics import serve

    port = free_port()
    server = serve(postgres.dsn(), mlflow_server, MODEL_NAME, "127.0.0.1", port)
    yield port
    server.shutdown()


def _traffic(api_url: str, spec, sample) -> None:
    """Good and bad requests, so that the API's labelled metrics have series."""
    with httpx.Client(base_url=api_url, timeout=30) as client:
        answer = client.post("/predict", json=_records(spec, sample, 3))
        assert answer.status_code == 200, answer.text
        prediction_id = answer.json()["predictions"][0]["prediction_id"]
        single = _records(spec, sample, 1)[0]
        for _ in range(2):  # a single record goes through the cache: a miss, then a hit
            assert client.post("/predict", json=single).status_code == 200
        assert client.post("/predict", json={"gr_liv_area": "big"}).status_code in (400, 422)
        assert client.post("/feedback", json={"prediction_id": prediction_id, "actual": 200000.0}).status_code == 202
        assert client.get("/model-info").status_code == 200


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, api, exporter, champion):
    """A real Prometheus scraping the API and the exporter every second, with the alert rules loaded."""
    binary = which("prometheus")
    api_url, api_port = api
    spec, sample, _ = champion
    _traffic(api_url, spec, sample)
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    targets = {"api": f"127.0.0.1:{api_port}", "pipeline": f"127.0.0.1:{exporter}"}
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] in targets]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_file = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log_file, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=60, process=process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            targets_up = httpx.get(f"{url}/api/v1/targets").json()["data"]["activeTargets"]
            scrapes = [t for t in targets_up if t["health"] == "up"]
            if len(scrapes) == len(targets):
                break
            assert time.monotonic() < deadline, f"targets not up: {targets_up}"
            time.sleep(0.5)
        time.sleep(3)  # a few scrapes, so that rate() has two samples
        yield url
    finally:
        process.terminate()
        process.wait(20)
        log_file.close()


def test_prometheus_scrapes_both_services_and_loads_the_rules(prometheus):
    targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
    assert {t["labels"]["job"]: t["health"] for t in targets} == {"api": "up", "pipeline": "up"}
    groups = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    rules = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert set(rules) == {"ServiceDown", "HighErrorRate", "ModelAccuracyDrop", "HighP95Latency", "DataDriftDetected",
                          "ModelArtifactRefused", "IntervalCoverageLow"}


def test_every_dashboard_and_alert_query_evaluates_on_exported_metrics(prometheus, stored_monitoring_rows):
    exported = set(httpx.get(f"{prometheus}/api/v1/label/__name__/values").json()["data"])
    problems = []
    queries = dashboard_queries() + alert_queries()
    for where, expression in queries:
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}).json()
        if answer["status"] != "success":
            problems.append(f"{where}: {expression!r} fails: {answer.get('error')}")
        missing = metric_names(expression) - exported
        if missing:
            problems.append(f"{where}: {expression!r} reads metrics nobody exports: {sorted(missing)}")
    assert not problems, "\n".join(problems)
    assert len(queries) > 30


def test_pipeline_figures_reach_prometheus_as_stored(prometheus, stored_monitoring_rows, champion, postgres):
    from price_platform.warehouse import connect

    _, _, version = champion

    def value(expression: str) -> float:
        result = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}).json()["data"]["result"]
        assert result, expression
        return float(result[0]["value"][1])

    assert value("drift_share") == pytest.approx(stored_monitoring_rows.drifted_share)
    assert value("drift_detected") == float(stored_monitoring_rows.drift_detected)
    assert value(f'model_accuracy{{model_version="{version}"}}') == pytest.approx(0.85)
    assert value(f'model_holdout_accuracy{{model_version="{version}"}}') == pytest.approx(0.88)
    assert value('model_version_info{alias="champion"}') == 1.0
    assert value(f'model_estimated_rmsle{{model_version="{version}", bound="estimate"}}') == pytest.approx(0.17)
    assert value(f'model_live_error{{model_version="{version}", metric="rmsle"}}') == pytest.approx(0.14)
    assert value(f'interval_coverage{{model_version="{version}", segment="bldg_type=1Fam"}}') == pytest.approx(0.93)
    assert value(f'interval_width{{model_version="{version}", segment="all"}}') == pytest.approx(61000)
    # the low overall coverage (0.81 < 0.90 - 0.05) is what the alert's expression selects
    low = httpx.get(f"{prometheus}/api/v1/query", params={"query": alert_expression("IntervalCoverageLow")}).json()
    assert [series["metric"]["segment"] for series in low["data"]["result"]] == ["all"]
    assert value("time() - last_successful_training_timestamp_seconds") < 3600
    assert value('sum(predictions_total)') >= 3
    with connect(postgres.dsn()) as connection, connection.cursor() as cursor:  # other tests may have loaded sales
        cursor.execute("select sum(rows_loaded), sum(rows_rejected) from (select distinct on (partition_key) *"
                       " from price_data.loads order by partition_key, loaded_at desc) as latest")
        loaded, rejected = cursor.fetchone()
    assert value("sales_rows_rejected / (sales_rows_loaded + sales_rows_rejected)") == pytest.approx(
        rejected / (loaded + rejected)
    )
