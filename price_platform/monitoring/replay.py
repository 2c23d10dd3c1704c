"""Play the bundled sales history forward, month by month, into the landing folder (``price-platform replay``).

Each month's sales are written to ``<landing>/sales_YYYY_MM.csv``; the running platform does
the rest (the landing sensor ingests the file, features are rebuilt, ``drift_report`` runs,
drift past threshold retrains, a better challenger is promoted and the API follows the new
champion). The replay waits for each month's drift report before dropping the next, so the
history arrives in order, and ends with a summary of drift, retrains and registry decisions.

The real months after 2008 hardly drift, so ``--shock YYYY-MM`` multiplies that month's prices
by :data:`SHOCK_FACTOR` (a simulated market jump): the drift rule should see it and retrain.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.modeling import read_sample
from price_platform.settings import Settings
from price_platform.warehouse import connect

#: The month a replay starts at when the platform holds no features yet (trained on 2006-2008).
DEFAULT_START = "2009-01"
#: A shocked month's prices are multiplied by this.
SHOCK_FACTOR = 1.8


class ReplayError(RuntimeError):
    """A replay that cannot go on, with the stage a month stopped at."""


@dataclass(frozen=True)
class MonthOutcome:
    """What the platform made of one replayed month."""

    month: str
    rows: int
    drifted_share: float | None
    target_psi: float | None
    drift_detected: bool | None
    shocked: bool = False
    note: str = ""  # what was done after its drift report (the demo: its live traffic), printed at the end of its line


#: Called after each month's drift report with the month, its sales as landed and its outcome; returns a note.
AfterMonth = Callable[[str, pd.DataFrame, MonthOutcome], str]


def months_of(spec: DatasetSpec, sample: pd.DataFrame) -> list[str]:
    """Every ``YYYY-MM`` of the bundled history, in order."""
    if spec.time is None or not spec.time.year_column:
        raise ReplayError(f"data set {spec.name} has no year and month columns to replay by")
    keys = sample[spec.time.year_column].astype(int) * 100 + sample[spec.time.month_column].astype(int)
    return [f"{key // 100:04d}-{key % 100:02d}" for key in sorted(set(keys))]


def month_rows(spec: DatasetSpec, sample: pd.DataFrame, month: str) -> pd.DataFrame:
    """The sales of one ``YYYY-MM`` month."""
    year, number = (int(part) for part in month.split("-"))
    assert spec.time is not None and spec.time.year_column and spec.time.month_column
    chosen = (sample[spec.time.year_column] == year) & (sample[spec.time.month_column] == number)
    return sample[chosen]


def landed_rows(spec: DatasetSpec, sample: pd.DataFrame, month: str, price_factor: float = 1.0) -> pd.DataFrame:
    """One month's sales as they land: prices times ``price_factor``, rounded."""
    rows = month_rows(spec, sample, month)
    if price_factor != 1.0:
        rows = rows.assign(**{spec.target: (rows[spec.target] * price_factor).round()})
    return rows


def drop_month(landing: Path, spec: DatasetSpec, sample: pd.DataFrame, month: str, *, price_factor: float = 1.0) -> Path:
    """Write one month's sales, prices times ``price_factor``, to the landing folder.

    Atomically: the landing sensor never sees half a file.
    """
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / f"sales_{month.replace('-', '_')}.csv"
    partial = landing / f".{target.name}.part"
    landed_rows(spec, sample, month, price_factor).to_csv(partial, index=False)
    partial.replace(target)
    return target


def first_month_to_replay(dsn: str, months: list[str]) -> str:
    """The month after the newest features partition, or :data:`DEFAULT_START` before any."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select to_regclass('price_data.features') is not null")
        latest = None
        if cursor.fetchone()[0]:
            cursor.execute("select max(partition_key) from price_data.features")
            latest = cursor.fetchone()[0]
    if latest is None:
        return DEFAULT_START
    later = [month for month in months if month > latest[:7]]
    if not later:
        raise ReplayError(f"the platform already holds every month of the history (up to {latest[:7]})")
    return later[0]


def stage_of(dsn: str, partition_key: str, since: datetime) -> str:
    """How far a month got: ``landed``, ``ingested``, ``features`` or ``drift``."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select exists (select 1 from monitoring.drift_summaries where partition_key = %s and created_at >= %s)",
            (partition_key, since),
        )
        if cursor.fetchone()[0]:
            stage = "drift"
        else:
            cursor.execute(
                "select exists (select 1 from price_data.loads where partition_key = %s and loaded_at >= %s)",
                (partition_key, since),
            )
            stage = "ingested" if cursor.fetchone()[0] else "landed"
            cursor.execute("select to_regclass('price_data.features') is not null")
            if stage == "ingested" and cursor.fetchone()[0]:
                cursor.execute("select exists (select 1 from price_data.features where partition_key = %s)",
                               (partition_key,))
                stage = "features" if cursor.fetchone()[0] else stage
    return stage


def wait_for_drift(dsn: str, partition_key: str, since: datetime, timeout: float, poll: float = 2.0) -> None:
    """Wait until the month's drift report is stored; raise :class:`ReplayError` naming the stage it stopped at."""
    deadline = time.monotonic() + timeout
    while (stage := stage_of(dsn, partition_key, since)) != "drift":
        if time.monotonic() > deadline:
            raise ReplayError(
                f"{partition_key[:7]} stopped at stage '{stage}' after {timeout:.0f} s"
                " (is the Dagster daemon running the landing and drift sensors?)"
            )
        time.sleep(poll)


def outcome(dsn: str, month: str, rows: int, since: datetime, *, shocked: bool = False) -> MonthOutcome:
    """The stored drift summary of a replayed month (``None`` figures when it has none)."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select drifted_share, target_psi, drift_detected from monitoring.drift_summaries"
            " where partition_key = %s and created_at >= %s order by created_at desc limit 1",
            (f"{month}-01", since),
        )
        found = cursor.fetchone() or (None, None, None)
    return MonthOutcome(month, rows, *found, shocked=shocked)


def decisions(dsn: str, model_name: str, since: datetime) -> list[tuple]:
    """Registry decisions since the replay started: (when, action, from, to, reason, metrics)."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select created_at, action, from_version, to_version, reason, metrics from model_registry.deployments"
            " where model_name = %s and created_at >= %s order by id",
            (model_name, since),
        )
        rows = cursor.fetchall()
    return rows


def summary(outcomes: list[MonthOutcome], decided: list[tuple]) -> str:
    """A plain-text report: drift month by month, then every promotion or refusal with its metrics."""
    lines = ["month    sales  drifted share  price PSI  retrain"]
    for item in outcomes:
        share = "-" if item.drifted_share is None else f"{item.drifted_share:.2f}"
        psi = "-" if item.target_psi is None else f"{item.target_psi:.3f}"
        retrain = "-" if item.drift_detected is None else ("yes" if item.drift_detected else "no")
        shock = f"  (prices x{SHOCK_FACTOR:g}: a simulated shock)" if item.shocked else ""
        note = f"  {item.note}" if item.note else ""
        lines.append(f"{item.month}  {item.rows:5d}  {share:>13}  {psi:>9}  {retrain}{shock}{note}")
    lines.append("")
    lines.append("registry decisions:" if decided else "registry decisions: none")
    for created, action, old, new, reason, metrics in decided:
        lines.append(f"  {created:%Y-%m-%d %H:%M:%S} {action:8s} {old or '-'} -> {new}: {reason} {metrics}")
    return "\n".join(lines)


def months_to_replay(history: list[str], dsn: str, months: int, start: str | None = None) -> list[str]:
    """The ``months`` months of ``history`` a replay drops, from ``start`` or after the newest features."""
    start = start or first_month_to_replay(dsn, history)
    if start not in history:
        raise ReplayError(f"{start} is not a month of the history ({history[0]} .. {history[-1]})")
    return history[history.index(start):][:months]


def replay(settings: Settings, dsn: str, months: int, start: str | None = None, *, wait: bool = True,
           timeout: float = 900.0, shock: str | None = None, after_month: AfterMonth | None = None) -> list[MonthOutcome]:
    """Drop ``months`` months into the landing folder in order, waiting for each one's drift report.

    The prices of the month ``shock`` (one of those months) are multiplied by :data:`SHOCK_FACTOR`.
    ``after_month`` (with ``wait``) runs after each month's drift report, before the next month lands.
    """
    spec = load_dataset(settings.dataset)
    sample = read_sample(spec)
    chosen = months_to_replay(months_of(spec, sample), dsn, months, start)
    if shock is not None and shock not in chosen:
        raise ReplayError(f"the shocked month {shock} is not one of the replayed months ({chosen[0]} .. {chosen[-1]})")
    outcomes = []
    for month in tqdm(chosen, desc="replay", unit="month"):
        since = datetime.now(UTC)
        shocked = month == shock
        path = drop_month(settings.landing, spec, sample, month, price_factor=SHOCK_FACTOR if shocked else 1.0)
        if wait:
            wait_for_drift(dsn, f"{month}-01", since, timeout)
        outcomes.append(outcome(dsn, month, len(month_rows(spec, sample, month)), since, shocked=shocked))
        if wait and after_month is not None:
            factor = SHOCK_FACTOR if shocked else 1.0
            outcomes[-1] = replace(outcomes[-1], note=after_month(month, landed_rows(spec, sample, month, factor),
                                                                 outcomes[-1]))
        tqdm.write(f"{month}: {path.name} landed" + (f" with prices x{SHOCK_FACTOR:g}" if shocked else "")
                   + (f", drift detected: {outcomes[-1].drift_detected}" if wait else ""))
    return outcomes
