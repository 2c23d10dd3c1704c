"""Jobs of the monitoring domain: drift of one partition, the daily monitoring pass, and retraining."""

import dagster as dg

from price_platform.defs.ingestion.assets import RAW_SALES
from price_platform.defs.monitoring.assets import (
    DRIFT_REPORT,
    ESTIMATED_PERFORMANCE,
    LIVE_PERFORMANCE,
    PREDICTION_LOG_PARTITIONS,
)

DRIFT_JOB = "drift_check"
RETRAIN_JOB = "retrain"
MONITORING_JOB = "daily_monitoring"

#: Retraining rebuilds what the training and registry domains define (dataset, study, candidate,
#: evaluation, promotion through its gate); never the sales or feature partitions.
retrain_job = dg.define_asset_job(
    RETRAIN_JOB,
    selection=dg.AssetSelection.groups("training", "registry"),
    description="Train a challenger on the current features and promote it only if it beats the champion.",
)

monitoring_job = dg.define_asset_job(
    MONITORING_JOB,
    selection=dg.AssetSelection.assets(PREDICTION_LOG_PARTITIONS, LIVE_PERFORMANCE, ESTIMATED_PERFORMANCE),
    description="Prediction-log partitions ahead and retention, then live error by week and version, and the"
    " champion's RMSLE estimated by month before prices arrive.",
)


def build_drift_job():  # -> dagster's unresolved asset job (no public type)
    """The features of one partition rebuilt from its ``raw_sales`` (dbt), then its ``drift_report``."""
    return dg.define_asset_job(
        DRIFT_JOB,
        selection=dg.AssetSelection.assets(DRIFT_REPORT).upstream() - dg.AssetSelection.assets(RAW_SALES),
        description="Rebuild one partition's features from its sales, then measure its drift against the champion.",
    )
