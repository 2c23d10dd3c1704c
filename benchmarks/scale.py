"""The platform at 1 and 10 million rows: ingestion, features, training, evaluation and drift.

For each size (``PRICE_PLATFORM_BENCH_ROWS``, comma-separated; default ``1000000,10000000``)
a fresh embedded PostgreSQL is started under ``benchmarks/.work/`` and the pipeline runs
stage by stage:

1. ``synth``: synthetic sales of that size as monthly Parquet files (not part of the pipeline);
2. ``ingest``: ``bulk_load`` (chunked ``COPY``, two files at a time) into ``raw_sales``;
3. ``features``: ``dbt build`` of the whole project (models and their tests), as the asset does;
4. ``training``: the platform's step in a child process: features read partition by partition
   from PostgreSQL into a ``QuantileDMatrix``, a fixed 100-tree depth-6 model (peak RSS of
   that process is ``training_*_peak_gb``); its peer, bare ``xgboost.train`` with the same
   parameters and threads on the same features already in memory as a float32 array (in its
   own child process; only the DMatrix and the training are timed);
5. ``evaluation``: holdout RMSLE, partition by partition;
6. ``drift``: the monitoring domain's drift report of the last month against the training months;
7. ``dask_training`` and ``dask_drift``: the same training and drift on Dask, with
   ``PRICE_PLATFORM_DASK_SCHEDULER`` naming a scheduler: the one in the environment if set (a
   cluster of your own), else a ``dask scheduler`` and two ``dask worker`` processes (one
   thread each) that the bench starts as subprocesses for the stage. Training runs as
   ``xgboost.dask`` with each worker reading its feature partitions from PostgreSQL; drift
   is submitted to a worker as one task. Not part of ``pipeline_*_seconds``.

Threads: ``PRICE_PLATFORM_THREADS`` (default 1) for XGBoost on both sides of the in-process
comparison (``nthread`` and ``OMP_NUM_THREADS`` of each child); on Dask each of the two
workers has that many threads, so Dask uses twice as many cores.

Progress: each stage prints when it starts and ends; synth and ingest report rows done,
rate and ETA (:mod:`price_platform.progress`, one line every few seconds in a log).

Result names for 10M rows are the issue's (``ingest_rows_per_second``,
``training_10m_vs_bare_xgboost``, ``training_10m_peak_gb``, ``pipeline_10m_seconds``); the
1M figures carry ``_1m``. Every stage's time is reported too.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.results import Result

WORK = Path(__file__).resolve().parent / ".work" / "scale"
HOLDOUT_MONTHS = 6
#: ``max_wal_size`` of the bench's server (see :func:`configure_bulk_server`).
BULK_MAX_WAL_SIZE = "16GB"
THREADS = int(os.environ.get("PRICE_PLATFORM_THREADS", "1"))
ROOT = Path(__file__).resolve().parent.parent
#: Dask workers the bench starts when no scheduler is given in the environment.
DASK_WORKERS = 2


def sizes() -> list[int]:
    raw = os.environ.get("PRICE_PLATFORM_BENCH_ROWS", "1000000,10000000")
    return [int(part.replace("_", "")) for part in raw.split(",") if part.strip()]


def label(rows: int) -> str:
    return f"{rows // 1_000_000}m" if rows % 1_000_000 == 0 else str(rows)


def run() -> list[Result]:
    results = []
    for rows in sizes():
        results.extend(run_size(rows))
    return results


def run_size(rows: int) -> list[Result]:
    from sqlalchemy.engine import make_url

    from price_platform.postgres import EmbeddedPostgres, PostgresServer
    from price_platform.testing import free_port
    from price_platform.warehouse import migrate

    name = label(rows)
    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    embedded = EmbeddedPostgres(folder / "postgres", free_port())
    embedded.start()
    try:
        server = PostgresServer(server_url=make_url(embedded.url), database_name="price_platform")
        server.ensure_databases()
        configure_bulk_server(server)
        migrate(server.dsn())
        stages = pipeline(rows, server, folder)
    finally:
        embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return report(rows, stages)


def configure_bulk_server(server) -> None:  # noqa: ANN001
    """Server settings for a bulk workload of this size (``ALTER SYSTEM``, then a reload).

    PostgreSQL's default ``max_wal_size`` (1 GB) forces a checkpoint every gigabyte of WAL, i.e.
    every few seconds while ``COPY`` and the features table write gigabytes, each followed by
    full-page images of every page touched again; at ``BULK_MAX_WAL_SIZE`` checkpoints come from
    ``checkpoint_timeout`` instead. A managed PostgreSQL sized for this load sets the same.
    """
    import psycopg2

    connection = psycopg2.connect(server.dsn())
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("alter system set max_wal_size = %s", (BULK_MAX_WAL_SIZE,))
        cursor.execute("select pg_reload_conf()")
    connection.close()


def pipeline(rows: int, server, folder: Path) -> dict[str, float]:  # noqa: ANN001
    """Run the stages on ``server``; return their seconds and the training figures."""
    from price_platform.bulk_load import bulk_load
    from price_platform.datasets import load_dataset
    from price_platform.modeling import read_sample
    from price_platform.settings import DEFAULT_DATASET
    from price_platform.synth import SynthOptions, write
    from price_platform.training.dask_processes import on_workers

    spec = load_dataset(DEFAULT_DATASET)
    figures: dict[str, float] = {}
    loads_seen: list[float] = []

    def timed(stage: str, action):  # noqa: ANN001, ANN202
        print(f"  {label(rows)} {stage} ...", flush=True)
        started = time.perf_counter()
        value = action()
        figures[stage] = time.perf_counter() - started
        loads_seen.append(os.getloadavg()[0])
        print(f"  {label(rows)} {stage}: {figures[stage]:.1f} s (load average {loads_seen[-1]:.1f})", flush=True)
        return value

    options = SynthOptions(rows=rows, drift=0.1, seed=0)
    files = timed("synth", lambda: write(spec, read_sample(spec), options, folder / "landing", show_progress=True))
    loads = timed("ingest", lambda: bulk_load(server.dsn(), spec, files, show_progress=True, workers=2))
    figures["ingested_rows"] = sum(load.rows_loaded for load in loads)
    shutil.rmtree(folder / "landing")
    timed("features", lambda: build_features(server, spec))
    keys = feature_keys(server.dsn())
    train_keys, holdout_keys = keys[:-HOLDOUT_MONTHS], keys[-HOLDOUT_MONTHS:]
    job = {"dsn": server.dsn(), "train": train_keys, "holdout": holdout_keys, "threads": THREADS, "model": str(folder / "model.ubj")}
    platform = child("platform", job)
    figures["training"] = platform["seconds"]
    figures["training_peak_gb"] = platform["peak_gb"]
    figures["training_rows"] = platform["rows"]
    print(f"  {label(rows)} training: {platform['seconds']:.1f} s, peak {platform['peak_gb']:.2f} GB", flush=True)
    bare = child("bare", job)
    figures["bare_xgboost"] = bare["seconds"]
    print(f"  {label(rows)} bare xgboost.train: {bare['seconds']:.1f} s", flush=True)
    figures["holdout_rmsle"] = timed("evaluation", lambda: evaluate(server.dsn(), spec, holdout_keys, job["model"]))
    print(f"  drift: {timed('drift', lambda: drift(server.dsn(), spec, train_keys, holdout_keys[-1]))}", flush=True)
    with dask_scheduler(folder) as address:
        print(f"  {label(rows)} dask_training ... (scheduler {address})", flush=True)
        on_dask = child("platform", {**job, "dask_scheduler": address, "model": str(folder / "model-dask.ubj")})
        if on_dask["engine"] != "dask" or on_dask["rows"] != platform["rows"]:
            raise RuntimeError(f"the Dask training did not train on Dask over the same rows: {on_dask}")
        figures["dask_training"] = on_dask["seconds"]
        print(f"  {label(rows)} dask_training: {on_dask['seconds']:.1f} s", flush=True)
        figures["dask_holdout_rmsle"] = evaluate(server.dsn(), spec, holdout_keys, str(folder / "model-dask.ubj"))
        summary = timed("dask_drift", lambda: on_workers(address, drift, server.dsn(), spec, train_keys, holdout_keys[-1]))
        print(f"  drift on a Dask worker: {summary}", flush=True)
    figures["load_average"] = sum(loads_seen) / len(loads_seen)  # other work on the machine while measuring
    return figures


def build_features(server, spec) -> None:  # noqa: ANN001
    from price_platform.defs.features.project import build_vars, dbt_executable, dbt_project
    from price_platform.defs.features.resources import PlatformDbt
    from price_platform.defs.resources import Warehouse

    warehouse = Warehouse(
        database_url=server.server_url.render_as_string(hide_password=False), database_name=server.database_name
    )
    dbt = PlatformDbt(project_dir=dbt_project(), dbt_executable=dbt_executable(), warehouse=warehouse)
    dbt.cli(["build", "--vars", json.dumps(build_vars(spec, None, None))]).wait()


def feature_keys(dsn: str) -> list[str]:
    from price_platform.training.distributed import feature_partitions

    return [key for key, _ in feature_partitions(dsn)]


@contextlib.contextmanager
def dask_scheduler(folder: Path) -> Iterator[str]:
    """The address of a Dask scheduler with workers: ``PRICE_PLATFORM_DASK_SCHEDULER`` if set, else one started here.

    Started here: ``dask scheduler`` and :data:`DASK_WORKERS` ``dask worker`` processes of
    ``THREADS`` threads (:func:`~price_platform.training.dask_processes.dask_processes`; the
    workers import this module for the drift task), stopped when the block ends.
    """
    given = os.environ.get("PRICE_PLATFORM_DASK_SCHEDULER")
    if given:
        yield given
        return
    from price_platform.training.dask_processes import dask_processes

    with dask_processes(folder / "dask", workers=DASK_WORKERS, threads=THREADS, pythonpath=ROOT) as address:
        yield address


def child(role: str, job: dict) -> dict:
    """Run one training side in its own process, so its peak memory is its own."""
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"])}
    if job.get("dask_scheduler"):
        env["PRICE_PLATFORM_DASK_SCHEDULER"] = job["dask_scheduler"]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", role, json.dumps(job)],
        capture_output=True, text=True, check=False, env=env, cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{role} training failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def platform_training(job: dict) -> dict:
    """The platform's training step: read features from PostgreSQL in partitions, fit 100 trees (on Dask with a scheduler)."""
    from price_platform.datasets import load_dataset
    from price_platform.settings import DEFAULT_DATASET, Settings
    from price_platform.training.distributed import train_large

    spec = load_dataset(DEFAULT_DATASET)
    settings = Settings(threads=job["threads"], dask_min_rows=10**12, dask_scheduler=job.get("dask_scheduler"))
    started = time.perf_counter()
    trained = train_large(settings, job["dsn"], spec, job["train"])
    seconds = time.perf_counter() - started
    trained.booster.save_model(job["model"])
    return {"seconds": seconds, "rows": trained.rows, "engine": trained.engine, "peak_gb": peak_gb()}


def bare_training(job: dict) -> dict:
    """Bare ``xgboost.train`` on the same features, already in memory as one float32 array."""
    import numpy as np
    import xgboost as xgb

    from price_platform.datasets import load_dataset
    from price_platform.settings import DEFAULT_DATASET
    from price_platform.training.distributed import (
        DEFAULT_PARAMS,
        DEFAULT_ROUNDS,
        FeatureEncoder,
        feature_categories,
        feature_partitions,
        read_partition,
    )

    spec = load_dataset(DEFAULT_DATASET)
    encoder = FeatureEncoder(spec, feature_categories(job["dsn"], spec))
    counts = dict(feature_partitions(job["dsn"]))
    rows = sum(counts[key] for key in job["train"])
    matrix = np.empty((rows, len(encoder.columns)), dtype=np.float32)
    target = np.empty(rows, dtype=np.float32)
    start = 0
    for key in job["train"]:  # filled in place: the peer's own peak stays near the one matrix
        part = read_partition(job["dsn"], spec, key, dictionary=True)
        matrix[start : start + part.num_rows], target[start : start + part.num_rows] = encoder.matrix(part), encoder.label(part)
        start += part.num_rows
    params = {**DEFAULT_PARAMS, "nthread": job["threads"]}
    started = time.perf_counter()
    xgb.train(params, xgb.QuantileDMatrix(matrix, target, max_bin=params["max_bin"], nthread=job["threads"]), DEFAULT_ROUNDS)
    return {"seconds": time.perf_counter() - started, "rows": len(target), "peak_gb": peak_gb()}


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def evaluate(dsn: str, spec, keys: list[str], model: str) -> float:  # noqa: ANN001
    import xgboost as xgb

    from price_platform.training.distributed import FeatureEncoder, feature_categories, rmsle

    booster = xgb.Booster(model_file=model)
    return rmsle(booster, dsn, spec, keys, FeatureEncoder(spec, feature_categories(dsn, spec)))


def drift(dsn: str, spec, reference_keys: list[str], current_key: str) -> str:  # noqa: ANN001
    """The drift report of one month against the training months (columns read with Arrow, categories as codes), summed up."""
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd
    import pyarrow as pa

    from price_platform.monitoring.reports import Thresholds, measure
    from price_platform.training.distributed import read_partition

    def frame(keys: list[str]) -> pd.DataFrame:
        """The partitions as one frame, read two at a time (each ``COPY`` is its own server process and Arrow
        parses without the GIL); text read dictionary-encoded and unified, so it arrives as categories."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            tables = list(pool.map(lambda key: read_partition(dsn, spec, key, dictionary=True), keys))
        return pa.concat_tables(tables).unify_dictionaries().to_pandas()

    report = measure(
        spec, frame(reference_keys), frame([current_key]), partition_key=current_key, model_version=None,
        thresholds=Thresholds(psi=0.2, share=0.3),
    )
    return f"{int(report.features['drifted'].sum())} of {len(report.features)} features drifted"


#: Issue 20's goals at 10M rows: the pipeline (ingest, features, training, evaluation, drift) and each stage.
PIPELINE_SECONDS, STAGE_SECONDS = 300.0, 90.0


def report(rows: int, figures: dict[str, float]) -> list[Result]:
    name = label(rows)
    big = rows >= 10_000_000
    stages = ["ingest", "features", "training", "evaluation", "drift"]
    total = sum(figures[stage] for stage in stages)
    ingest_rate = figures["ingested_rows"] / figures["ingest"]
    ratio = figures["training"] / figures["bare_xgboost"]
    command = f"PRICE_PLATFORM_BENCH_ROWS={rows} make bench BENCH=scale"

    def named(base: str) -> str:
        if big:
            return base
        return base.replace("10m", name) if "10m" in base else f"{base}_{name}"

    results = [
        Result(named("ingest_rows_per_second"), ingest_rate, "rows/s", ">= 100000 at 10M", ingest_rate >= 100_000, command),
        Result(named("training_10m_vs_bare_xgboost"), ratio, "x", "<= 1.1", ratio <= 1.1, command),
        Result(named("training_10m_peak_gb"), figures["training_peak_gb"], "GB", "<= 8", figures["training_peak_gb"] <= 8, command),
        Result(named("pipeline_10m_seconds"), total, "s", "<= 300", total <= PIPELINE_SECONDS, command),
        Result(f"scale_{name}_synth_seconds", figures["synth"], "s", "making the data, not a pipeline stage", True, command),
    ]
    for stage in stages:
        results.append(Result(f"scale_{name}_{stage}_seconds", figures[stage], "s", f"<= {STAGE_SECONDS:.0f} (a stage)",
                              figures[stage] <= STAGE_SECONDS, command))
    results.append(Result(f"scale_{name}_bare_xgboost_seconds", figures["bare_xgboost"], "s", "peer", True, command))
    dask_goal = f"beside the in-process {figures['training']:.1f} s ({DASK_WORKERS} workers)"
    results.append(Result(f"scale_{name}_dask_training_seconds", figures["dask_training"], "s", dask_goal, True, command))
    results.append(Result(f"scale_{name}_dask_drift_seconds", figures["dask_drift"], "s", "drift on a Dask worker", True, command))
    results.append(Result(f"scale_{name}_dask_holdout_rmsle", figures["dask_holdout_rmsle"], "log", "quality on Dask", True, command))
    results.append(Result(f"scale_{name}_holdout_rmsle", figures["holdout_rmsle"], "log", "quality", True, command))
    results.append(Result(f"scale_{name}_load_average", figures["load_average"], "load", "machine load (2 cores)", True, command))
    print(
        f"  {name}: ingest {ingest_rate:,.0f} rows/s; training {figures['training']:.1f} s vs bare "
        f"{figures['bare_xgboost']:.1f} s = {ratio:.2f}x; peak {figures['training_peak_gb']:.2f} GB; pipeline {total:.0f} s",
        flush=True,
    )
    return results


if __name__ == "__main__":  # a training child: python -m benchmarks.scale platform|bare JOB_JSON
    role, job = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps((platform_training if role == "platform" else bare_training)(job)))
