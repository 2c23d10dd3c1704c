"""The engine of a large training, as a Dagster resource (windows and coverage come from ``training``)."""

from __future__ import annotations

import dagster as dg

from price_platform.settings import Settings, default, get_settings
from price_platform.training.distributed import DEFAULT_ROUNDS


class ScaleTraining(dg.ConfigurableResource):
    """Boosting rounds of the fixed model, and where it trains: Dask scheduler, size from which Dask is used."""

    rounds: int = DEFAULT_ROUNDS
    dask_scheduler: str | None = None
    dask_min_rows: int = default("dask_min_rows")

    @classmethod
    def from_settings(cls, settings: Settings) -> ScaleTraining:
        return cls(dask_scheduler=settings.dask_scheduler, dask_min_rows=settings.dask_min_rows)

    def engine_settings(self, threads: int) -> Settings:
        """The platform settings with this engine and ``threads``, as the training functions take them."""
        return get_settings().model_copy(
            update={"threads": threads, "dask_scheduler": self.dask_scheduler, "dask_min_rows": self.dask_min_rows}
        )
