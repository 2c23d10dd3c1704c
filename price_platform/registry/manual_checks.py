"""The checks of a promotion or rollback by hand: the gate's, on the current holdout of the features.

Every version is loaded with its artifact verified against the digests recorded at registration.
"""

from __future__ import annotations

from dataclasses import dataclass

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.defs.registry.resources import ModelRegistry
from price_platform.registry.champion import load_rival, load_version
from price_platform.registry.promotion import Check, Verdict
from price_platform.resources import Warehouse
from price_platform.settings import Settings
from price_platform.training.dataset import read_features, split
from price_platform.training.evaluation import evaluate


@dataclass(frozen=True)
class ManualContext:
    """Where a person's promotion or rollback reads and writes: registry, database and holdout rows."""

    settings: Settings
    spec: DatasetSpec
    registry: ModelRegistry
    warehouse: Warehouse

    @classmethod
    def from_settings(cls, settings: Settings) -> ManualContext:
        return cls(
            settings=settings,
            spec=load_dataset(settings.dataset),
            registry=ModelRegistry.from_settings(settings),
            warehouse=Warehouse.from_settings(settings),
        )

    def holdout(self):  # -> pd.DataFrame
        """The holdout window of the features as they are now."""
        data = split(
            read_features(self.warehouse.engine, self.spec),
            self.spec,
            holdout_months=self.settings.holdout_months,
            validation_months=self.settings.validation_months,
            seed=self.settings.seed,
        )
        return data.holdout

    def promotion_check(self, version: str) -> Check:
        """The gate: ``version`` behaves and beats the champion on the holdout by the margin."""

        def check(champion: str | None) -> Verdict:
            uri, name, dsn = self.registry.tracking_uri, self.registry.model_name, self.warehouse.dsn
            current = load_rival(uri, name, champion, dsn=dsn)
            result = evaluate(self.spec, self.holdout(), load_version(uri, name, version, dsn=dsn), current)
            return result.verdict(self.settings.promotion_margin)

        return check

    def rollback_check(self) -> Check:
        """The version coming back behaves and has finite metrics on the holdout."""

        def check(target: str | None) -> Verdict:
            assert target is not None
            model = load_version(self.registry.tracking_uri, self.registry.model_name, target, dsn=self.warehouse.dsn)
            return evaluate(self.spec, self.holdout(), model, None).verdict(self.settings.promotion_margin)

        return check
