"""The services of one worker process, and the records the model is not asked to price."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from price_platform.datasets import DatasetSpec
from price_platform.record_rules import broken_rules
from price_platform.settings import Settings
from serving.auth import KeyRing
from serving.batching import MicroBatcher
from serving.cache import SharedStore
from serving.model_store import ModelStore
from serving.prediction_log import PredictionLog
from serving.rollout import OffPathScorer
from serving.schemas import RequestSchemas

if TYPE_CHECKING:
    from serving.pricing import Pricing  # which imports the refusals below


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
    """The services of one worker process, made by :func:`serving.app.create_app` and kept on ``app.state.services``.

    Handlers take each one as a dependency (:mod:`serving.dependencies`); what Litestar gives no
    dependencies to reads them here: the lifespan, the key check (:mod:`serving.guards`), the
    middleware, and the drain of :mod:`serving.cli`, which sets :attr:`draining`.
    """

    settings: Settings
    spec: DatasetSpec
    schemas: RequestSchemas
    store: ModelStore
    shared: SharedStore
    log: PredictionLog
    keys: KeyRing
    dsn: str | None
    batcher: MicroBatcher
    #: Scores of the shadow (and of the champion beside a canary's answer), off the request path;
    #: bounded like the prediction log's buffer (``log_buffer_size`` rows).
    offpath: OffPathScorer
    pricing: Pricing
    draining: bool = False
