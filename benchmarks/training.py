"""Training benchmarks: holdout quality and interval coverage of the default chain, its wall time, pruning's gain.

Runs the whole chain (dataset -> study -> candidate -> evaluation -> promotion) with the
settings' default budget on the bundled Ames sales in throwaway databases of the platform's
PostgreSQL server, against a real MLflow server started for the run. Peers on the same rows:
the plain XGBoost pipeline and the ridge baseline (``ames_holdout_rmsle``), and the same
Optuna study without pruning at an equal number of trials, the default budget
(``settings.n_trials``; at 16 trials the pruned study had not yet reached the unpruned one's
best region: ratio 1.010) (``pruning_*``). The machine is shared, so the two studies run in
the order pruned, unpruned, unpruned, pruned and each kind's wall time is the sum of its two
runs (a load that rises or falls steadily weighs on both alike); the studies are seeded and
their pruner depends only on the scores, so both runs of a kind are the same computation.

``ames_holdout_rmsle_median`` and ``ames_holdout_rmsle_spread`` (max - min): the default path
(a study of ``settings.n_trials`` trials, its time limit only a safety net, then the candidate
fitted with the best trial's settings, exactly as the training assets do) with the seeds
:data:`SEEDS` for the study's sampler and the models; FLAML's 180 s AutoML scores 0.143 on this
split (issue 16). Alone: ``python -m benchmarks.training --seeds`` (it too writes ``results.json``).

``large_table_peak_rss_gib``: the candidate's fit (:func:`~price_platform.training.candidate.fit_candidate`:
calibration fit, validation predictions, refit on train + validation, holdout predictions, ridge
baseline, behaviour tests, SHAP) on a 1,000,000-row table shaped like Ames (its sales drawn with
replacement, every size and the price jittered), in a child process whose peak resident memory
is read from ``getrusage``. Above ``model.exact_kernel_rows`` the blend's kernel ridge is the
Nystroem one, linear in the rows; the peer is the exact kernel ridge's n x n kernel matrix alone
(8 n^2 bytes, about 7,450 GiB at this size). The boosting rounds are cut to
:data:`LARGE_TABLE_ROUNDS` to bound the run's time: the booster's memory is its histogram
matrix, which does not grow with the rounds. Alone: ``python -m benchmarks.training --large-table 1000000``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import numpy as np

from benchmarks.results import Result
from price_platform.datasets import load_dataset
from price_platform.defs.registry.assets import production_model
from price_platform.defs.registry.checks import challenger_beats_champion
from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.resources import Dataset, Warehouse
from price_platform.defs.training.assets import (
    candidate_model,
    hyperparameter_study,
    model_evaluation,
    training_dataset,
)
from price_platform.defs.training.resources import TrainingConfig
from price_platform.modeling import build_ridge_baseline, build_xgboost_pipeline
from price_platform.postgres import PostgresServer, ensure_server
from price_platform.registry import tracking
from price_platform.registry.champion import champion_version
from price_platform.settings import get_settings
from price_platform.testing import drop_databases, free_port
from price_platform.training.dataset import split
from price_platform.training.metrics import regression_metrics
from price_platform.training.study import StudyResult, run_study

COMMAND = "make bench BENCH=training"
#: Seeds of the study and the candidate over which the default path's holdout RMSLE is summarised.
SEEDS = (1, 2, 3)
#: Rows of the large table whose candidate fit must stay within :data:`LARGE_TABLE_GIB`.
LARGE_TABLE_ROWS = 1_000_000
LARGE_TABLE_GIB = 8.0
#: Boosting rounds of the large-table fit (the memory does not depend on them; the time does).
LARGE_TABLE_ROUNDS = 40


def _features(spec):
    from price_platform.testing import sample_features

    return sample_features(spec)


def _start_mlflow(backend: str, artifacts: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    bin_dir = Path(sys.executable).parent
    process = subprocess.Popen(
        [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend, "--artifacts-destination", str(artifacts), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job-runner processes competing
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"http://127.0.0.1:{port}"
        if process.poll() is not None:
            raise RuntimeError("the MLflow server exited at start")
        time.sleep(0.5)
    process.kill()
    raise TimeoutError("the MLflow server did not listen within 180 s")


def run() -> list[Result]:
    settings = get_settings()
    platform = ensure_server(settings)
    server = PostgresServer(server_url=platform.server_url, database_name=f"pp_bench_{uuid.uuid4().hex[:8]}")
    server.ensure_databases()
    try:
        results = _measure(settings, server)
        results += seeded_results(settings, server)
    finally:
        drop_databases(server)
    return [*results, *large_table_results(LARGE_TABLE_ROWS)]


def seeded_results(settings, server: PostgresServer) -> list[Result]:
    """The default path's holdout RMSLE over :data:`SEEDS`: median and spread."""
    from price_platform.training.candidate import fit_candidate

    spec = load_dataset(settings.dataset)
    data = split(_features(spec), spec, holdout_months=settings.holdout_months, validation_months=settings.validation_months,
                 seed=settings.seed)  # fmt: skip
    rounds = TrainingConfig.from_settings(settings).boosting_rounds
    scores = {}
    for seed in SEEDS:
        study = run_study(
            spec, data, storage_url=server.url("optuna"), study_name=f"seed-{seed}-{uuid.uuid4().hex[:6]}",
            n_trials=settings.n_trials, timeout=settings.study_timeout_seconds, seed=seed, threads=settings.threads,
            rounds=rounds,
        )  # fmt: skip
        trained = fit_candidate(spec, data, study.best_params, coverage=settings.interval_coverage, seed=seed,
                                threads=settings.threads, parallel_trees=settings.parallel_trees,
                                kernel_weight=study.kernel_weight)  # fmt: skip
        scores[seed] = trained.metrics["holdout_rmsle"]
        print(f"seed {seed}: {study.trials} trials ({study.pruned} pruned, cut short: {study.cut_short}) in {study.seconds:.0f} s,"
              f" best validation RMSLE {study.best_value:.4f} (kernel ridge share {study.kernel_weight:.2f}),"
              f" holdout RMSLE {scores[seed]:.4f}", flush=True)  # fmt: skip
    median, spread = float(np.median(list(scores.values()))), max(scores.values()) - min(scores.values())
    print(f"holdout RMSLE over seeds {list(SEEDS)}: median {median:.4f}, spread {spread:.4f} (FLAML 180 s: 0.143)")
    command = f"{COMMAND} (or python -m benchmarks.training --seeds)"
    return [
        Result("ames_holdout_rmsle_median", median, "rmsle", "<= 0.130", median <= 0.130, command),
        Result("ames_holdout_rmsle_spread", spread, "rmsle", "<= 0.003", spread <= 0.003, command),
    ]


def seeded_alone() -> list[Result]:
    """:func:`seeded_results` in throwaway databases of the platform's PostgreSQL server."""
    settings = get_settings()
    server = PostgresServer(server_url=ensure_server(settings).server_url, database_name=f"pp_bench_{uuid.uuid4().hex[:8]}")
    server.ensure_databases()
    try:
        return seeded_results(settings, server)
    finally:
        drop_databases(server)


def large_table(rows: int, seed: int = 0):
    """A ``rows``-row features table shaped like Ames: its sales drawn with replacement, sizes and price jittered."""
    spec = load_dataset(get_settings().dataset)
    sample = _features(spec)
    generator = np.random.default_rng(seed)
    frame = sample.iloc[generator.integers(0, len(sample), rows)].reset_index(drop=True)
    scale = np.exp(generator.normal(0.0, 0.05, rows))
    for column in [spec.area_column, *spec.derived]:
        if column and column in frame:
            frame[column] = frame[column] * scale
    frame[spec.target] = frame[spec.target] * scale * np.exp(generator.normal(0.0, 0.05, rows))
    frame["record_id"] = np.arange(rows).astype(str)
    frame["arrival_seq"] = np.arange(rows)
    return spec, frame


def fit_large_table(rows: int) -> dict[str, float]:
    """Fit the candidate on :func:`large_table` (in this process) and report its figures and peak memory."""
    from price_platform.training.candidate import fit_candidate

    settings = get_settings()
    spec, frame = large_table(rows)
    data = split(frame, spec, holdout_months=settings.holdout_months, validation_months=settings.validation_months, seed=settings.seed)
    del frame
    started = time.perf_counter()
    trained = fit_candidate(spec, data, {"n_estimators": LARGE_TABLE_ROUNDS}, coverage=settings.interval_coverage)
    kernel = trained.pipeline.named_steps["model"].regressor_.named_estimators_["kernel_ridge"].named_steps["regressor"].estimator_
    return {
        "rows": rows,
        "fit_rows": trained.metrics["train_rows"],
        "kernel_ridge": type(kernel).__name__,
        "holdout_rmsle": trained.metrics["holdout_rmsle"],
        "seconds": time.perf_counter() - started,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def large_table_results(rows: int) -> list[Result]:
    """``large_table_peak_rss_gib``: the large-table fit's peak resident memory, measured in a child process."""
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.training", "--large-table", str(rows)],
        capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1", "BENCH_LARGE_TABLE_CHILD": "1"},
    )  # fmt: skip
    if child.returncode != 0:
        raise RuntimeError(f"the {rows}-row fit failed:\n{child.stderr[-3000:]}")
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    peak, exact = figures["peak_rss_gib"], 8 * figures["fit_rows"] ** 2 / 2**30
    print(
        f"{rows:,}-row table: candidate fit ({figures['kernel_ridge']}, {LARGE_TABLE_ROUNDS} rounds) peak RSS"
        f" {peak:.2f} GiB in {figures['seconds']:.0f} s, holdout RMSLE {figures['holdout_rmsle']:.4f}; the exact"
        f" kernel ridge's n x n kernel alone {exact:,.0f} GiB (ratio {peak / exact:.5f})"
    )
    command = f"python -m benchmarks.training --large-table {rows}"
    return [Result("large_table_peak_rss_gib", peak, "GiB", f"<= {LARGE_TABLE_GIB:g}", peak <= LARGE_TABLE_GIB, command)]


if __name__ == "__main__":
    arguments = argparse.ArgumentParser(description="Parts of the training benchmark, alone.")
    which = arguments.add_mutually_exclusive_group(required=True)
    which.add_argument("--large-table", type=int, metavar="ROWS", help="the large-table fit's peak memory")
    which.add_argument("--seeds", action="store_true", help="the default path's holdout RMSLE over SEEDS")
    parsed = arguments.parse_args()
    if parsed.seeds:
        from benchmarks.__main__ import record

        seeded = seeded_alone()
        record([result.as_dict() for result in seeded])  # into results.json, as the whole bench would
        for result in seeded:
            print(result)
    elif os.environ.get("BENCH_LARGE_TABLE_CHILD"):
        print(json.dumps(fit_large_table(parsed.large_table)))
    else:
        for result in large_table_results(parsed.large_table):
            print(result)


def _measure(settings, server: PostgresServer) -> list[Result]:
    spec = load_dataset(settings.dataset)
    name = server.database_name
    url = server.server_url.render_as_string(hide_password=False)
    warehouse = Warehouse(database_url=url, database_name=name, home=str(settings.home))
    features = _features(spec)
    from price_platform.testing import write_features

    write_features(warehouse.engine, features)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as artifacts:
        mlflow, tracking_uri = _start_mlflow(server.url("mlflow"), Path(artifacts))
        try:
            resources = {
                "warehouse": warehouse,
                "dataset": Dataset(path=str(settings.dataset)),
                "training": TrainingConfig.from_settings(settings),
                "registry": ModelRegistry(tracking_uri=tracking_uri, model_name=settings.model_name),
            }
            started = time.perf_counter()
            outcome = dg.materialize(
                [training_dataset, hyperparameter_study, candidate_model, model_evaluation, production_model,
                 challenger_beats_champion],
                resources=resources,
            )  # fmt: skip
            chain_seconds = time.perf_counter() - started
            version = champion_version(tracking_uri, settings.model_name)
            assert outcome.success and version is not None, "the training chain did not promote a champion"
            client = tracking.client(tracking_uri)
            metrics = client.get_run(client.get_model_version(settings.model_name, version).tags["run_id"]).data.metrics
        finally:
            mlflow.terminate()
            mlflow.wait(30)

    data = split(features, spec, holdout_months=settings.holdout_months, validation_months=settings.validation_months, seed=settings.seed)
    fit_rows, holdout = data.fit_rows, data.holdout
    actual = holdout[spec.target].to_numpy(float)
    peers = {}
    for peer, pipeline in {
        "xgboost": build_xgboost_pipeline(spec, threads=settings.threads),
        "ridge": build_ridge_baseline(spec),
    }.items():
        pipeline.fit(fit_rows[spec.features], fit_rows[spec.target])
        peers[peer] = regression_metrics(actual, pipeline.predict(holdout[spec.features]))["rmsle"]
    rmsle = metrics["holdout_rmsle"]
    print(
        f"holdout RMSLE {rmsle:.4f} on {len(holdout)} sales; plain XGBoost {peers['xgboost']:.4f} "
        f"(ratio {rmsle / peers['xgboost']:.3f}), ridge {peers['ridge']:.4f} (ratio {rmsle / peers['ridge']:.3f})"
    )
    coverage = metrics["interval_coverage"]
    print(f"interval coverage {coverage:.3f} (nominal {settings.interval_coverage}); chain {chain_seconds:.0f} s")
    results += [
        Result("ames_holdout_rmsle", rmsle, "rmsle", "<= 0.135", rmsle <= 0.135, COMMAND),
        Result("interval_coverage", coverage, "share", "0.90 +- 0.03", abs(coverage - 0.9) <= 0.03, COMMAND),
        Result("training_chain_seconds", chain_seconds, "s", "<= 300", chain_seconds <= 300, COMMAND),
    ]

    studies: dict[bool, list[StudyResult]] = {True: [], False: []}
    for pruning in (True, False, False, True):
        studies[pruning].append(run_study(
            spec, data, storage_url=server.url("optuna"), study_name=f"pruning-{pruning}-{uuid.uuid4().hex[:6]}",
            n_trials=settings.n_trials, timeout=3600, seed=settings.seed, threads=settings.threads, pruning=pruning,
        ))  # fmt: skip
    seconds = {pruning: sum(run.seconds for run in runs) for pruning, runs in studies.items()}
    best = {pruning: runs[0].best_value for pruning, runs in studies.items()}
    wall_ratio = seconds[True] / seconds[False]
    score_ratio = best[True] / best[False]
    print(
        f"study of {settings.n_trials} trials: pruned {studies[True][0].pruned}, "
        f"{' + '.join(f'{run.seconds:.1f}' for run in studies[True])} s vs "
        f"{' + '.join(f'{run.seconds:.1f}' for run in studies[False])} s without pruning (ratio {wall_ratio:.2f}); "
        f"best validation RMSLE {best[True]:.4f} vs {best[False]:.4f} (ratio {score_ratio:.3f})"
    )
    results += [
        Result("pruning_wall_time_ratio", wall_ratio, "ratio", "<= 0.6", wall_ratio <= 0.6, COMMAND),
        Result("pruning_best_score_ratio", score_ratio, "ratio", "<= 1.01",
               bool(np.isfinite(score_ratio) and score_ratio <= 1.01), COMMAND),
    ]
    warehouse.engine.dispose()
    return results
