"""The monitoring domain's resource: thresholds, the registry to read the champion from, alerting."""

import dagster as dg
from mlflow.entities.model_registry import ModelVersion

from price_platform.monitoring.reports import Thresholds
from price_platform.registry.champion import ChampionModel
from price_platform.settings import Settings, default


class Monitoring(dg.ConfigurableResource):
    """Drift and estimated-loss thresholds, the champion's holdout length and nominal interval coverage, where it
    is registered, where alerts go."""

    psi_threshold: float = default("psi_threshold")
    drift_share_threshold: float = default("drift_share_threshold")
    accuracy_drop_threshold: float = default("accuracy_drop_threshold")
    estimated_rmsle_rise_threshold: float = default("estimated_rmsle_rise_threshold")
    holdout_months: int = default("holdout_months")
    interval_coverage: float = default("interval_coverage")
    tracking_uri: str | None = None
    model_name: str = default("model_name")
    alert_webhook_url: str | None = None
    partitions_ahead: int = default("prediction_partitions_ahead")
    retention_months: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Monitoring":
        return cls(
            psi_threshold=settings.psi_threshold,
            drift_share_threshold=settings.drift_share_threshold,
            accuracy_drop_threshold=settings.accuracy_drop_threshold,
            estimated_rmsle_rise_threshold=settings.estimated_rmsle_rise_threshold,
            holdout_months=settings.holdout_months,
            interval_coverage=settings.interval_coverage,
            tracking_uri=settings.tracking_uri,
            model_name=settings.model_name,
            alert_webhook_url=settings.alert_webhook_url,
            partitions_ahead=settings.prediction_partitions_ahead,
            retention_months=settings.prediction_retention_months,
        )

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(psi=self.psi_threshold, share=self.drift_share_threshold)

    def holdout_mape(self, version: str) -> float | None:
        """The ``holdout_mape`` metric of the run that trained ``version`` (``None`` if unknown)."""
        if not self.tracking_uri:
            return None
        from price_platform.registry import tracking

        client = tracking.client(self.tracking_uri)
        run_id = client.get_model_version(self.model_name, version).run_id
        return client.get_run(run_id).data.metrics.get("holdout_mape") if run_id else None

    def champion(self) -> ModelVersion | None:
        """The registered version holding the alias ``champion``; ``None`` before the first promotion."""
        if not self.tracking_uri:
            return None
        from price_platform.registry import CHAMPION, tracking

        return tracking.version_by_alias(tracking.client(self.tracking_uri), self.model_name, CHAMPION)

    def champion_model(self, version: str, dsn: str) -> ChampionModel:
        """The registered ``version`` loaded (its files checked against the digests stored in ``dsn``)."""
        from price_platform.registry.champion import load_version

        if not self.tracking_uri:
            raise ValueError("no tracking_uri: the champion's model cannot be loaded")
        return load_version(self.tracking_uri, self.model_name, version, dsn=dsn)
