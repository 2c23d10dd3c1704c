"""What the handlers share: settings, data set, request schemas, the model, stores, the log writer and the off-path scorer."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import numpy as np
from litestar.params import Dependency

from price_platform.datasets import DatasetSpec
from price_platform.record_rules import broken_rules
from price_platform.settings import Settings
from serving import metrics
from serving.auth import KeyRing
from serving.batching import MicroBatcher
from serving.cache import SharedStore, cache_key
from serving.model_store import LoadedModel, ModelStore
from serving.prediction_log import PredictionLog
from serving.rollout import OffPathScorer
from serving.schemas import RequestSchemas

#: Batches at least this long are predicted in a worker thread so the event loop keeps serving.
OFFLOAD_ROWS = 64


class UnpriceableRecords(ValueError):
    """Records the model gives no finite positive price for (far outside what it was trained on)."""

    def __init__(self, records: list[int]) -> None:
        self.records = records
        super().__init__(
            f"record {records[0]}: the model gives no finite price for it (its values lie far outside the data"
            f" the model was trained on)" + (f"; also records {records[1:10]}" if len(records) > 1 else "")
        )


class ImpossibleRecords(UnpriceableRecords):
    """Records that break one of the data set's cross-field rules (``rules`` in its YAML): not priced."""

    def __init__(self, broken: list[tuple[int, str]]) -> None:
        self.records = [index for index, _ in broken]
        index, rule = broken[0]
        ValueError.__init__(
            self,
            f"record {index}: breaks the data set's rule {rule!r} (each value may be in range, together they describe"
            " no real item)" + (f"; also records {self.records[1:10]}" if len(broken) > 1 else ""),
        )


def refuse_impossible(spec: DatasetSpec, rows: Sequence[tuple[Any, ...]]) -> None:
    """Raise :class:`ImpossibleRecords` when a record breaks one of the data set's cross-field rules."""
    broken = broken_rules(spec, rows)
    if broken:
        raise ImpossibleRecords(broken)


def checked(prices: np.ndarray) -> np.ndarray:
    """The prices; raise :class:`UnpriceableRecords` naming any that are not finite and positive."""
    bad = np.flatnonzero(~(np.isfinite(prices) & (prices > 0)))
    if bad.size:
        raise UnpriceableRecords(bad.tolist())
    return prices


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
    batcher: MicroBatcher = field(default_factory=MicroBatcher)
    #: Scores of the shadow (and of the champion beside a canary's answer), off the request path;
    #: bounded like the prediction log's buffer (``log_buffer_size`` rows).
    offpath: Any = None  # OffPathScorer (Any: Litestar inspects these types)

    def __post_init__(self) -> None:
        if self.offpath is None:
            serving = self.store.serving_roles if self.store is not None else tuple
            self.offpath = OffPathScorer(self.dsn, capacity=self.settings.log_buffer_size, serving=serving)

    async def prices(self, model: LoadedModel, records: Sequence[msgspec.Struct]) -> np.ndarray:
        """Prices of ``records``; a single record goes through the cache (keyed by model version) and the micro-batcher."""
        if self.spec.rules:
            try:
                refuse_impossible(self.spec, [msgspec.structs.astuple(record) for record in records])
            except ImpossibleRecords:
                self.batcher.not_coming()
                raise
        if len(records) == 1:
            key = cache_key(model.name, model.version, msgspec.json.encode(records[0]))
            cached = await self.shared.get_price(key)
            if cached is not None:
                self.batcher.not_coming()
                metrics.CACHE_HIT.inc()
                return np.array([cached])
            metrics.CACHE_MISS.inc()
            price = await self.batcher.predict(model, msgspec.structs.astuple(records[0]))
            if not (math.isfinite(price) and price > 0):
                raise UnpriceableRecords([0])
            self.shared.set_price(key, price)
            return np.array([price])
        self.batcher.not_coming()
        rows = [msgspec.structs.astuple(record) for record in records]
        if len(rows) >= OFFLOAD_ROWS:
            return checked(await asyncio.to_thread(model.predict, rows))
        return checked(model.predict(rows))

    def explain(self, model: LoadedModel, record: Any) -> tuple[dict[str, float], dict[str, float], float, float] | None:
        compiled = model.explainable
        return None if compiled is None else compiled.explain(msgspec.structs.astuple(record))


#: How a handler asks for the :class:`Services`: Litestar hands over the one object without converting
#: it (validating a dataclass of locks, threads and connections would fail, and cost time on every request).
SharedServices = Annotated[Services, Dependency(skip_validation=True)]
