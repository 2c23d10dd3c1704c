"""Paired live errors: two versions' predictions of the same requests, with the prices sent back as feedback.

A request's answer is in ``monitoring.predictions``; what another version scored for it off the
request path (a shadow, or the champion beside a canary's answer) is in
``monitoring.rollout_predictions`` under the same prediction id. Its price arrives through
``POST /feedback`` in ``monitoring.actuals``. Pairs come in the order their prices arrived,
which is the order the sequential test saw them in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg2.extensions

from price_platform.rollout.sequential import squared_log_errors

PAIRS = """
    with scored as (
        select prediction_id, model_version, prediction from monitoring.predictions
        where model_version in (%(champion)s, %(challenger)s)
        union all
        select prediction_id, model_version, prediction from monitoring.rollout_predictions
        where model_version in (%(champion)s, %(challenger)s)
    ),
    champion as (
        select distinct on (prediction_id) prediction_id, prediction from scored where model_version = %(champion)s
    ),
    challenger as (
        select distinct on (prediction_id) prediction_id, prediction from scored where model_version = %(challenger)s
    )
    select actuals.prediction_id, actuals.received_at, champion.prediction as champion,
           challenger.prediction as challenger, actuals.actual
    from monitoring.actuals
    join champion using (prediction_id)
    join challenger using (prediction_id)
    where actuals.actual > 0 and champion.prediction > 0 and challenger.prediction > 0
    order by actuals.received_at, actuals.prediction_id
"""


def paired_predictions(
    connection: psycopg2.extensions.connection, champion: str, challenger: str
) -> pd.DataFrame:
    """``prediction_id, received_at, champion, challenger, actual`` of every request both versions scored."""
    with connection.cursor() as cursor:
        cursor.execute(PAIRS, {"champion": champion, "challenger": challenger})
        rows = cursor.fetchall()
    return pd.DataFrame(rows, columns=["prediction_id", "received_at", "champion", "challenger", "actual"])


def differences(pairs: pd.DataFrame) -> np.ndarray:
    """``e_champion² - e_challenger²`` per pair: positive where the challenger was closer."""
    actual = pairs["actual"].to_numpy(dtype=float)
    return squared_log_errors(pairs["champion"].to_numpy(dtype=float), actual) - squared_log_errors(
        pairs["challenger"].to_numpy(dtype=float), actual
    )


def rmsle(pairs: pd.DataFrame, column: str) -> float:
    """RMSLE of one side of the pairs (NaN without pairs)."""
    if pairs.empty:
        return float("nan")
    errors = squared_log_errors(pairs[column].to_numpy(dtype=float), pairs["actual"].to_numpy(dtype=float))
    return float(np.sqrt(errors.mean()))
