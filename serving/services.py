"""What the handlers share: settings, data set, request schemas, the model, stores and the log writer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from price_platform.datasets import DatasetSpec
from price_platform.settings import Settings
from serving import metrics
from serving.auth import KeyRing
from serving.cache import SharedStore, cache_key
from serving.model_store import LoadedModel, ModelStore
from serving.prediction_log import PredictionLog
from serving.schemas import RequestSchemas

#: Batches at least this long are predicted in a worker thread so the event loop keeps serving.
OFFLOAD_ROWS = 64


@dataclass
class Services:
    """The serving state of one worker process (kept on ``app.state.services``)."""

    settings: Settings
    spec: DatasetSpec
    schemas: RequestSchemas
    store: ModelStore
    shared: SharedStore
    log: PredictionLog
    keys: KeyRing
    dsn: str | None
    draining: bool = False

    async def prices(self, model: LoadedModel, records: Sequence[msgspec.Struct]) -> list[float]:
        """Prices of ``records``; a single record goes through the cache, keyed by model version."""
        rows = [msgspec.structs.astuple(record) for record in records]
        if len(rows) == 1:
            key = cache_key(model.version, msgspec.json.encode(records[0]))
            cached = await self.shared.get_price(key)
            if cached is not None:
                metrics.CACHE.labels(result="hit").inc()
                return [cached]
            metrics.CACHE.labels(result="miss").inc()
            price = float(model.predict(rows)[0])
            await self.shared.set_price(key, price)
            return [price]
        if len(rows) >= OFFLOAD_ROWS:
            return (await asyncio.to_thread(model.predict, rows)).tolist()
        return model.predict(rows).tolist()

    def explain(self, model: LoadedModel, record: Any) -> tuple[dict[str, float], dict[str, float], float, float] | None:
        compiled = model.explainable
        return None if compiled is None else compiled.explain(msgspec.structs.astuple(record))
