"""Offline replay: a challenger scored on logged requests whose prices are known, beside what was answered then.

Before a challenger sees live traffic, the requests of a chosen period that got a price back
through feedback (``monitoring.predictions`` joined with ``monitoring.actuals``) are priced
again by the challenger's pipeline, from the features logged with them. Its RMSLE on those
requests is compared with the RMSLE of the answers the API gave at the time (whichever version
was champion then). The challenger's own canary answers are left out: they compare nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import psycopg2.extensions
from psycopg2.extras import execute_values

from price_platform.datasets import DatasetSpec
from price_platform.registry.champion import load_version
from price_platform.rollout.sequential import squared_log_errors
from price_platform.warehouse import connect

LOGGED = """
    select predictions.prediction_id, predictions.created_at, predictions.model_version,
           predictions.features, predictions.prediction, actuals.actual
    from monitoring.predictions
    join monitoring.actuals using (prediction_id)
    where predictions.created_at >= %(start)s and predictions.created_at < %(end)s
      and predictions.model_version <> %(challenger)s and actuals.actual > 0 and predictions.prediction > 0
    order by predictions.created_at, predictions.prediction_id
"""


class ReplayError(ValueError):
    """A replay period that cannot be replayed as asked."""


@dataclass(frozen=True)
class ReplayResult:
    """The challenger's and the answered RMSLE on the same logged requests of one period."""

    challenger: str
    start: str
    end: str
    requests: int
    answered_versions: tuple[str, ...]
    champion_rmsle: float
    challenger_rmsle: float

    @property
    def worse(self) -> bool:
        """Whether the challenger's RMSLE on the replayed requests is higher than what was answered."""
        return self.challenger_rmsle > self.champion_rmsle

    def as_metadata(self) -> dict[str, object]:
        return {
            "challenger_version": self.challenger,
            "period": f"{self.start} to {self.end}",
            "requests": self.requests,
            "answered_by": ", ".join(self.answered_versions) or "none",
            "champion_rmsle": self.champion_rmsle,
            "challenger_rmsle": self.challenger_rmsle,
        }


def logged_requests(
    connection: psycopg2.extensions.connection, start: datetime, end: datetime, challenger: str
) -> pd.DataFrame:
    """The period's answered requests with a price: ``prediction_id, created_at, model_version, features, prediction, actual``."""
    if end <= start:
        raise ReplayError(f"replay period must end after it starts, got {start.isoformat()} to {end.isoformat()}")
    with connection.cursor() as cursor:
        cursor.execute(LOGGED, {"start": start, "end": end, "challenger": challenger})
        rows = cursor.fetchall()
    return pd.DataFrame(rows, columns=["prediction_id", "created_at", "model_version", "features", "prediction", "actual"])


def records(requests: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The logged features as the pipeline's input frame (a field the log does not hold is missing)."""
    return pd.DataFrame.from_records(list(requests["features"]), columns=list(spec.features))


def replay(
    tracking_uri: str,
    model_name: str,
    challenger: str,
    *,
    dsn: str,
    spec: DatasetSpec,
    start: datetime,
    end: datetime,
) -> ReplayResult:
    """Price the period's logged requests with ``challenger`` (its artifact checked as serving checks it)
    and compare with the answers given then."""
    with connect(dsn) as connection:
        requests = logged_requests(connection, start, end, challenger)
    answered_versions = tuple(sorted(requests["model_version"].unique(), key=str))
    if requests.empty:
        return ReplayResult(challenger, start.isoformat(), end.isoformat(), 0, (), float("nan"), float("nan"))
    pipeline = load_version(tracking_uri, model_name, challenger, dsn=dsn).pipeline
    prices = np.asarray(pipeline.predict(records(requests, spec)), dtype=float)
    actual = requests["actual"].to_numpy(dtype=float)
    answered = requests["prediction"].to_numpy(dtype=float)
    return ReplayResult(
        challenger=challenger,
        start=start.isoformat(),
        end=end.isoformat(),
        requests=len(requests),
        answered_versions=answered_versions,
        champion_rmsle=float(np.sqrt(squared_log_errors(answered, actual).mean())),
        challenger_rmsle=float(np.sqrt(squared_log_errors(np.maximum(prices, np.finfo(float).tiny), actual).mean())),
    )


def score_as_shadow(
    tracking_uri: str,
    model_name: str,
    version: str,
    *,
    dsn: str,
    spec: DatasetSpec,
    start: datetime,
    end: datetime,
) -> int:
    """Write ``version``'s prices of the period's logged, priced requests as its ``shadow`` rows; return how many.

    What a live shadow would have written for those requests (the pipeline is deterministic),
    for a demo or a backfill where no API served the shadow; rows already there are kept.
    """
    with connect(dsn) as connection:
        requests = logged_requests(connection, start, end, version)
        if requests.empty:
            return 0
        pipeline = load_version(tracking_uri, model_name, version, dsn=dsn).pipeline
        prices = np.asarray(pipeline.predict(records(requests, spec)), dtype=float)
        with connection.cursor() as cursor:
            execute_values(
                cursor,
                "insert into monitoring.rollout_predictions (prediction_id, model_version, role, prediction) values %s"
                " on conflict (prediction_id, model_version) do nothing",
                [(str(i), version, "shadow", float(p)) for i, p in zip(requests["prediction_id"], prices, strict=True)],
                page_size=len(requests),  # one statement, so rowcount counts every row inserted
            )
            return cursor.rowcount
