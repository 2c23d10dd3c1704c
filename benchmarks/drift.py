"""Drift report speed at two sizes, with Evidently's ``DataDriftPreset`` side by side.

1. 100,000 rows x 20 columns (the first 15 numeric columns of the data set description with
   its target, and its first 5 categorical ones, resampled from the bundled sample with noise;
   the current frame has a moved area column and moved prices).
2. 1,000,000 rows x 200 columns (150 numeric, 50 categorical; synthetic: normal, log-normal,
   integer and gappy columns, 3 to 300 categories; a fifth of the columns moved).

The platform computes a reference's statistics once and stores them in PostgreSQL (a
throwaway database on the machine's server); a report then reads the stored statistics and
the new frame only. The report time is that read plus the comparison (per column, and all columns together by
the PCA reconstruction error of ``monitoring.multivariate``), best of a few repeats;
the one-off reference time is printed and recorded beside it. Evidently gets the raw frames
(it has no stored reference) and runs in a child process with a time bound at 1M x 200.

3. Estimated RMSLE before the prices (direct loss estimation) on the demo's replay, offline:
   a champion trained on the months before the replay's reference year, the loss model fitted
   on that year (its holdout), then each replayed month (the demo's 12, the 6th with its prices
   x1.8) estimated from inputs and predictions alone and compared with its realized RMSLE.
   ``estimated_rmsle_mae`` is the mean absolute difference over those months; the peer is the
   estimate "no change" (the reference's RMSLE every month), and NannyML's own DLE on the same
   months, inputs and predictions (``benchmarks/nannyml_dle.py``). NannyML 0.13.1 needs
   xgboost < 3, which breaks the project's pin, so it runs in a virtualenv of its own that the
   bench makes with uv on first use (``benchmarks/.work/nannyml-venv``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2

from benchmarks.results import Result
from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.modeling import read_sample
from price_platform.monitoring import reference_store
from price_platform.monitoring.drift import Reference, compare
from price_platform.monitoring.multivariate import ReconstructionModel
from price_platform.settings import DEFAULT_DATASET

ROWS = 100_000
LARGE_ROWS = 1_000_000
LARGE_NUMERIC = 150
LARGE_CATEGORICAL = 50
#: Evidently's time bound on the 1M x 200 frames.
EVIDENTLY_LARGE_TIMEOUT = 600.0
COMMAND = "make bench BENCH=drift"
#: The demo's replay: 12 months from ``replay.DEFAULT_START``, the 6th shocked, after a reference year.
REPLAY_MONTHS = 12
SHOCKED = 6
REFERENCE_MONTHS = 12
#: NannyML's own virtualenv (it needs xgboost < 3) and what goes in it.
NANNYML_VENV = Path(__file__).resolve().parent / ".work" / "nannyml-venv"
NANNYML_PACKAGES = ("nannyml==0.13.1", "pandas<3", "statsmodels", "pyarrow")  # NannyML 0.13 predates pandas 3
#: Server the throwaway database is made on (the machine's PostgreSQL by default).
SERVER = os.environ.get("PRICE_PLATFORM_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def columns(spec: DatasetSpec) -> tuple[list[str], list[str], list[str]]:
    """Numeric (14 features and the target), categorical (5) and moved columns of the 100k frames."""
    numeric = [*list(spec.numeric)[:14], spec.target]
    categorical = list(spec.categorical)[:5]
    moved = [spec.area_column or numeric[0], spec.target]
    return numeric, categorical, moved


def frames(spec: DatasetSpec, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames of ``ROWS`` rows resampled from the bundled sample."""
    numeric, categorical, moved = columns(spec)
    sample = read_sample(spec)[numeric + categorical]
    rng = np.random.default_rng(seed)

    def draw(shift: float) -> pd.DataFrame:
        frame = sample.iloc[rng.integers(0, len(sample), ROWS)].reset_index(drop=True)
        for name in numeric:
            frame[name] = frame[name].to_numpy(dtype=float) * rng.normal(1.0, 0.02, ROWS)
        for name in moved:
            frame[name] = frame[name] * (1 + shift)
        return frame

    return draw(0.0), draw(0.15)


def large_frames(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """Reference and current frames of 1M rows, 150 numeric and 50 categorical synthetic columns."""
    rng = np.random.default_rng(seed)
    numeric = [f"num_{index:03d}" for index in range(LARGE_NUMERIC)]
    categorical = [f"cat_{index:02d}" for index in range(LARGE_CATEGORICAL)]

    def numeric_column(index: int, moved: bool) -> np.ndarray:
        shift = 0.6 if moved else 0.0  # in standard deviations
        kind = index % 4
        if kind == 0:
            values = rng.normal(shift, 1.0, LARGE_ROWS)
        elif kind == 1:
            values = rng.lognormal(5 + 0.6 * shift, 0.6, LARGE_ROWS)
        elif kind == 2:
            values = np.round(rng.gamma(2.0 + 3 * shift, 3.0, LARGE_ROWS))  # integer valued, few distinct
        else:
            values = rng.normal(100 + 15 * shift, 15, LARGE_ROWS)
            values[rng.random(LARGE_ROWS) < 0.05] = np.nan  # gappy
        return values

    def categorical_column(index: int, moved: bool) -> np.ndarray:
        count = (3, 12, 40, 300)[index % 4]
        names = np.array([f"c{index}_{value}" for value in range(count)], dtype=object)
        weights = 1.0 / np.arange(1, count + 1)
        weights = weights[::-1] if moved else weights  # a moved column's rare categories become common
        return names[rng.choice(count, LARGE_ROWS, p=weights / weights.sum())]

    def draw(current: bool) -> pd.DataFrame:
        data = {name: numeric_column(i, current and i % 5 == 0) for i, name in enumerate(numeric)}
        data |= {name: categorical_column(i, current and i % 5 == 0) for i, name in enumerate(categorical)}
        return pd.DataFrame(data)

    return draw(False), draw(True), numeric, categorical


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A migrated database of its own on :data:`SERVER`, dropped afterwards; yields its DSN."""
    from price_platform.warehouse import migrate

    name = f"pp_bench_drift_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(SERVER)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'create database "{name}"')
    dsn = SERVER.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(dsn)
        yield dsn
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


def stored_reference(dsn: str, reference: pd.DataFrame, numeric: list[str], categorical: list[str]) -> tuple[str, float]:
    """Compute and store the reference's statistics and multivariate model once; return the key and the seconds."""
    from price_platform.warehouse import connect

    start = time.perf_counter()
    prepared = Reference.from_frame(reference, numeric, categorical)
    multivariate = ReconstructionModel.fit(reference, numeric, categorical).to_dict()
    key = reference_store.reference_key(None, "bench", f"{len(reference)} rows", [*numeric, *categorical])
    with connect(dsn) as connection:
        reference_store.store(connection, key, prepared, model_version=None, window_label="bench",
                              multivariate=multivariate)
    return key, time.perf_counter() - start


def report_seconds(dsn: str, key: str, current: pd.DataFrame) -> tuple[float, pd.DataFrame, dict]:
    """One report: the stored statistics read back, then the new frame compared with them, column by column
    and all columns together (PCA reconstruction error)."""
    from price_platform.warehouse import connect

    start = time.perf_counter()
    with connect(dsn) as connection:
        found = reference_store.load(connection, key)
    assert found is not None and found[1] is not None, f"reference {key} not stored"
    table = compare(found[0], current, psi_threshold=0.2)
    multivariate = ReconstructionModel.from_dict(found[1]).measure(current)
    return time.perf_counter() - start, table, multivariate


def evidently_seconds(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]) -> float:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    start = time.perf_counter()
    report = Report([DataDriftPreset()])
    report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    return time.perf_counter() - start


def evidently_large_seconds(timeout: float) -> float | None:
    """Evidently on the 1M x 200 frames in a child process; ``None`` when it does not finish within ``timeout``.

    The child makes the frames first, then arms an alarm of ``timeout`` seconds that ends it.
    """
    code = (
        "import signal\n"
        "from benchmarks.drift import evidently_seconds, large_frames\n"
        "reference, current, numeric, categorical = large_frames()\n"
        f"signal.alarm({int(timeout)})\n"
        "print('seconds', evidently_seconds(reference, current, numeric, categorical), flush=True)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if done.returncode == -signal.SIGALRM:
        return None
    lines = [line for line in done.stdout.splitlines() if line.startswith("seconds ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"Evidently on 1M x 200 failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return float(lines[-1].split()[1])


def small(dsn: str, spec: DatasetSpec) -> list[Result]:
    numeric, categorical, _ = columns(spec)
    reference, current = frames(spec)
    key, once = stored_reference(dsn, reference, numeric, categorical)
    ours, table, multivariate = min((report_seconds(dsn, key, current) for _ in range(5)), key=lambda found: found[0])
    theirs = min(evidently_seconds(reference, current, numeric, categorical) for _ in range(2))
    drifted = sorted(table.loc[table["drifted"], "feature"])
    print(f"100k x 20: reference statistics once {once:.3f} s; report {ours:.3f} s, drifted columns {drifted};"
          f" {_multivariate(multivariate)}")
    print(f"100k x 20: evidently DataDriftPreset {theirs:.3f} s; speed-up {theirs / ours:.1f}x"
          f" ({theirs / (ours + once):.1f}x counting the reference statistics too)")
    return [
        Result("drift_100k_seconds", ours, "s", "<= 1 s", ours <= 1.0, COMMAND),
        Result("drift_100k_reference_seconds", once, "s", "once per reference", True, COMMAND),
        Result("drift_speedup_vs_evidently", theirs / ours, "x", ">= 50x vs Evidently", theirs / ours >= 50, COMMAND),
    ]


def large(dsn: str) -> list[Result]:
    reference, current, numeric, categorical = large_frames()
    key, once = stored_reference(dsn, reference, numeric, categorical)
    del reference
    ours, table, multivariate = min((report_seconds(dsn, key, current) for _ in range(2)), key=lambda found: found[0])
    moved = {name for index, name in enumerate(numeric) if index % 5 == 0} | {
        name for index, name in enumerate(categorical) if index % 5 == 0
    }
    found = set(table.loc[table["drifted"], "feature"])
    print(f"1M x 200: reference statistics once {once:.1f} s; report {ours:.2f} s;"
          f" {len(found & moved)} of {len(moved)} moved columns flagged, {len(found - moved)} unmoved flagged;"
          f" {_multivariate(multivariate)}")
    del current, table
    theirs = evidently_large_seconds(EVIDENTLY_LARGE_TIMEOUT)
    if theirs is None:
        print(f"1M x 200: evidently DataDriftPreset did not finish within {EVIDENTLY_LARGE_TIMEOUT:.0f} s"
              f" (speed-up over {EVIDENTLY_LARGE_TIMEOUT / ours:.0f}x)")
    else:
        print(f"1M x 200: evidently DataDriftPreset {theirs:.1f} s; speed-up {theirs / ours:.1f}x")
    return [
        Result("drift_1m_200_seconds", ours, "s", "<= 30 s", ours <= 30.0, COMMAND),
        Result("drift_1m_200_reference_seconds", once, "s", "once per reference", True, COMMAND),
        Result(
            "drift_1m_200_evidently_seconds", EVIDENTLY_LARGE_TIMEOUT if theirs is None else theirs, "s",
            f"peer; not finished in {EVIDENTLY_LARGE_TIMEOUT:.0f} s" if theirs is None else "peer, finished",
            theirs is not None, COMMAND,
        ),
    ]


def replay_months(spec: DatasetSpec, sample: pd.DataFrame) -> tuple[list[str], list[str], list[str], str]:
    """Training, reference and replayed months of the demo's replay, and its shocked month."""
    from price_platform.monitoring import replay

    history = replay.months_of(spec, sample)
    start = history.index(replay.DEFAULT_START)
    replayed = history[start:start + REPLAY_MONTHS]
    return history[:start - REFERENCE_MONTHS], history[start - REFERENCE_MONTHS:start], replayed, replayed[SHOCKED - 1]


def estimated_performance(spec: DatasetSpec) -> list[Result]:
    from price_platform.modeling import build_xgboost_pipeline
    from price_platform.monitoring import replay
    from price_platform.monitoring.performance_estimation import LossEstimator

    sample = read_sample(spec)
    train, reference, replayed, shocked = replay_months(spec, sample)

    def rows(months: list[str]) -> pd.DataFrame:
        return pd.concat([replay.month_rows(spec, sample, month) for month in months], ignore_index=True)

    fit = rows(train)
    champion = build_xgboost_pipeline(spec, threads=1).fit(fit[spec.features], fit[spec.target])
    held = rows(reference)
    start = time.perf_counter()
    estimator = LossEstimator.fit(spec, held[spec.features], champion.predict(held[spec.features]),
                                  held[spec.target].to_numpy(float))
    fitted = time.perf_counter() - start
    lines, ours, peer, realized_by_month = [], [], [], {}
    for month in replayed:
        batch = replay.month_rows(spec, sample, month)
        actual = batch[spec.target].to_numpy(float) * (replay.SHOCK_FACTOR if month == shocked else 1.0)
        predicted = champion.predict(batch[spec.features])
        realized = float(np.sqrt(np.mean((np.log(actual) - np.log(predicted)) ** 2)))
        found = estimator.estimate(batch[spec.features], predicted)
        ours.append(abs(found["estimated_rmsle"] - realized))
        peer.append(abs(estimator.reference_rmsle - realized))
        realized_by_month[month] = realized
        lines.append(f"  {month}{' shocked' if month == shocked else '        '} {len(batch):4d} sales: realized"
                     f" {realized:.4f}, estimated {found['estimated_rmsle']:.4f}"
                     f" [{found['lower']:.4f} .. {found['upper']:.4f}]")
    nannyml = nannyml_estimates(
        spec, champion, *([(month, replay.month_rows(spec, sample, month)) for month in months]
                          for months in (reference, replayed))
    )
    mae, mae_peer = float(np.mean(ours)), float(np.mean(peer))
    calm = [error for error, month in zip(ours, replayed, strict=True) if month != shocked]
    calm_peer = [error for error, month in zip(peer, replayed, strict=True) if month != shocked]
    print(f"estimated RMSLE (DLE) on the replay: loss model fitted on {estimator.reference_rows} reference sales"
          f" ({reference[0]} .. {reference[-1]}, RMSLE {estimator.reference_rmsle:.4f}) in {fitted:.1f} s")
    print("\n".join(lines))
    print(f"estimated_rmsle_mae {mae:.4f} over {len(replayed)} months, shocked month included"
          f" ({float(np.mean(calm)):.4f} without it); 'no change' estimate: {mae_peer:.4f}"
          f" ({float(np.mean(calm_peer)):.4f} without it)")
    results = [
        Result("estimated_rmsle_mae", mae, "RMSLE", "reported; peers: NannyML DLE, no-change", True, COMMAND),
        Result("estimated_rmsle_mae_without_shock", float(np.mean(calm)), "RMSLE", "reported", True, COMMAND),
        Result("estimated_rmsle_mae_no_change_peer", mae_peer, "RMSLE", "peer", True, COMMAND),
    ]
    if isinstance(nannyml, str):
        print(f"NannyML DLE: not run ({nannyml})")
        return results
    theirs = [abs(nannyml["months"][month] - realized_by_month[month]) for month in replayed]
    mae_nannyml = float(np.mean(theirs))
    print(f"NannyML DLE on the same months: estimated_rmsle_mae {mae_nannyml:.4f}"
          f" (fit {nannyml['fit_seconds']:.1f} s, estimate {nannyml['estimate_seconds']:.1f} s; ours: fit {fitted:.1f} s);"
          f" per month: " + ", ".join(f"{month[:7]} {nannyml['months'][month]:.4f}" for month in replayed))
    return [
        *results,
        Result("estimated_rmsle_mae_nannyml_peer", mae_nannyml, "RMSLE", "peer (NannyML 0.13.1 DLE)", True, COMMAND),
        Result("estimated_rmsle_mae_vs_nannyml", mae / mae_nannyml, "ratio", "reported (< 1: closer than NannyML)",
               True, COMMAND),
    ]


def nannyml_estimates(
    spec: DatasetSpec, champion, reference: list[tuple[str, pd.DataFrame]], analysed: list[tuple[str, pd.DataFrame]]
) -> dict | str:
    """NannyML's DLE estimates of the ``analysed`` months (run in its own virtualenv), or why it did not run."""
    python = _nannyml_python()
    if isinstance(python, str):
        return python
    folder = NANNYML_VENV.parent / f"dle-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    try:
        for name, months in (("reference", reference), ("analysis", analysed)):
            parts = []
            for month, batch in months:
                part = batch[spec.features].copy()
                part["y_pred"] = champion.predict(batch[spec.features])
                part["y_true"] = batch[spec.target].to_numpy(float)  # the analysis' are dropped before estimating
                part["month"] = month
                parts.append(part)
            pd.concat(parts, ignore_index=True).to_parquet(folder / f"{name}.parquet")
        (folder / "features.json").write_text(json.dumps(list(spec.features)))
        script = Path(__file__).resolve().parent / "nannyml_dle.py"
        done = subprocess.run([str(python), str(script), str(folder)], capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            return f"its run failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        return json.loads((folder / "estimates.json").read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _nannyml_python() -> Path | str:
    """The Python of NannyML's virtualenv, made with uv on first use; or why it could not be made."""
    python = NANNYML_VENV / "bin" / "python"
    if python.exists():
        return python
    uv = Path(sys.executable).parent / "uv"
    for command in ([str(uv), "venv", "-q", "--python", sys.executable, str(NANNYML_VENV)],
                    [str(uv), "pip", "install", "-q", "--python", str(python), *NANNYML_PACKAGES]):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(NANNYML_VENV, ignore_errors=True)
            return f"{' '.join(NANNYML_PACKAGES)} did not install: {done.stderr.strip()[-300:]}"
    return python


def _multivariate(found: dict) -> str:
    return (f"multivariate error {found['error']:.3f} vs threshold {found['threshold']:.3f}"
            f" ({found['components']} components, {found['rows']} rows measured): "
            + ("drifted" if found["drifted"] else "no drift"))


def run() -> list[Result]:
    spec = load_dataset(DEFAULT_DATASET)
    figures = estimated_performance(spec)
    with throwaway_database() as dsn:
        return [*small(dsn, spec), *large(dsn), *figures]


if __name__ == "__main__":
    run()
