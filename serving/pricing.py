"""How every prediction route (``/predict``, ``/explain``, ``/v2/models/{name}/infer``) prices records.

:class:`Pricing` checks the data set's rules, takes a single record through the cache and the
micro-batcher and a large batch to a worker thread; :meth:`Pricing.answer` also lets the canary
answer its share, logs the answer, queues the shadow's (and, beside a canary's answer, the
champion's) scores for the off-path scorer, which runs after the answer is sent, and counts it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
from litestar import Request
from litestar.exceptions import ServiceUnavailableException
from litestar.types import ASGIApp, Receive, Scope, Send

from price_platform.datasets import DatasetSpec
from serving import metrics
from serving.batching import MicroBatcher
from serving.cache import SharedStore, cache_key
from serving.fast_path import capped_flags
from serving.model_store import LoadedModel, ModelStore
from serving.prediction_log import LoggedPredictions, PredictionLog
from serving.rollout import CANARY_ROLE, CHAMPION_ROLE, SHADOW_ROLE, OffPathScorer, Rollout
from serving.services import ImpossibleRecords, UnpriceableRecords, checked, refuse_impossible

log = logging.getLogger(__name__)

#: Batches at least this long are predicted in a worker thread so the event loop keeps serving.
OFFLOAD_ROWS = 64
NO_MODEL = "No model is loaded yet (`Retry-After` says when to ask again)."

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
#: Where the 32 hex digits of a UUID go in its quoted, comma-terminated text ``"8-4-4-4-12",``.
_DIGITS = np.array([1 + i for i in range(36) if i not in (8, 13, 18, 23)])
_UUIDS = msgspec.json.Decoder(list[uuid.UUID])
#: Up to this many ids, ``uuid.uuid4`` is cheaper than numpy's per-call cost.
_FEW_IDS = 8


def new_ids(count: int) -> list[uuid.UUID]:
    """Random (version 4) UUIDs; many at once from one read of the system's random source, formatted with numpy.

    The text of all ids is built as one JSON array and parsed by msgspec, which makes the
    ``UUID`` objects without running ``UUID.__init__`` once per id.
    """
    if count <= _FEW_IDS:
        return [uuid.uuid4() for _ in range(count)]
    raw = np.frombuffer(os.urandom(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = np.full((count, 39), ord("-"), dtype=np.uint8)
    text[:, 0] = text[:, 37] = ord('"')
    text[:, 38] = ord(",")
    text[:, _DIGITS[0::2]] = _HEX[raw >> 4]
    text[:, _DIGITS[1::2]] = _HEX[raw & 0x0F]
    text[-1, 38] = ord("]")
    return _UUIDS.decode(b"[" + text.tobytes())


def serving_model(request: Request, store: ModelStore, detail: str = "no model is loaded yet") -> LoadedModel:
    """The champion answering ``request``, noted as ``request.state.model`` (a body it refuses is counted as its
    error: :func:`serving.app.invalid_input`); 503 with ``Retry-After`` (and ``detail``) before one is loaded."""
    model = store.current
    if model is None:
        raise ServiceUnavailableException(detail, headers={"Retry-After": "1"})
    request.state.model = model
    return model


def count_refusal(request: Request) -> None:
    """Count a refused body as an error of the model that was to answer it (none: a route that prices nothing)."""
    model: LoadedModel | None = getattr(request.state, "model", None)
    if model is not None:
        metrics.answered(model.version, CHAMPION_ROLE, "error").inc()


def expecting_a_row(app: ASGIApp) -> ASGIApp:
    """Route middleware: the micro-batcher counts a prediction request as on its way from its first byte,
    and the off-path scorer as in flight until its answer is sent."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        pricing: Pricing = scope["app"].state.services.pricing  # middleware takes no dependencies
        with pricing.batcher.expecting(), pricing.offpath.handling():
            await app(scope, receive, send)

    return middleware


def score_off_path(
    scorer: OffPathScorer, rollout: Rollout, champion: LoadedModel, answering: LoadedModel, ids: list, records: list
) -> None:
    """Queue the request for the shadow (unless it answered) and, beside a canary's answer, for the champion."""
    shadow = rollout.shadow
    if shadow is not None and shadow is not answering:
        scorer.submit(shadow, SHADOW_ROLE, ids, records)
    if answering is not champion:
        scorer.submit(champion, CHAMPION_ROLE, ids, records)


@dataclass(frozen=True, slots=True)
class Answered:
    """One request's records as answered: already logged, counted, and queued for the shadow."""

    version: str
    ids: list[uuid.UUID]
    prices: list[float]
    lower: list[float]
    upper: list[float]
    capped: list[bool]


@dataclass
class Pricing:
    """Prices of records from a loaded model, and the answers of the prediction routes built on them."""

    spec: DatasetSpec
    store: ModelStore
    shared: SharedStore
    batcher: MicroBatcher
    log: PredictionLog
    #: Scores of the shadow (and of the champion beside a canary's answer), off the request path.
    offpath: OffPathScorer

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
        """The model's SHAP explanation of ``record`` (None: not a tree model this server can explain)."""
        compiled = model.explainable
        return None if compiled is None else compiled.explain(msgspec.structs.astuple(record))

    async def canary_prices(
        self, canary: LoadedModel, champion: LoadedModel, records: list
    ) -> tuple[str, LoadedModel, np.ndarray]:
        """(role, model, prices) of a request routed to the canary; the champion's when the canary fails on it."""
        try:
            return CANARY_ROLE, canary, await self.prices(canary, records)
        except Exception as error:  # noqa: BLE001 (the canary's failure is not the client's: the champion answers)
            metrics.CANARY_FALLBACKS.inc()
            log.warning("canary version %s failed on a request (%r); the champion %s answers it",
                        canary.version, error, champion.version)
            return CHAMPION_ROLE, champion, await self.prices(champion, records)

    async def answer(
        self, model: LoadedModel, records: list, body: bytes, key_id: str | None, started: float, latency: Any,
    ) -> Answered:
        """Price ``records`` as every prediction route does (``/predict``, ``/v2/.../infer``).

        The champion answers, or the canary for its share of keys (of bodies without a key); the
        answer is logged under ``key_id``, queued for the shadow, counted, and its time since
        ``started`` observed on ``latency`` (the route's histogram) and per version and role.
        """
        rollout = self.store.rollout
        answering = model
        if rollout.canary is not None:
            answering = rollout.canary_for(key_id.encode() if key_id else body) or model
        if answering is model:
            role, values = CHAMPION_ROLE, await self.prices(model, records)
        else:
            role, answering, values = await self.canary_prices(answering, model, records)
        spread = math.exp(answering.interval_log_halfwidth)
        prices, lower, upper = values.tolist(), (values / spread).tolist(), (values * spread).tolist()
        ids = new_ids(len(prices))
        version = answering.version
        capped = capped_flags(values, answering.predictor.band)
        elapsed = time.perf_counter() - started
        self.log.add(
            LoggedPredictions(ids, datetime.now(UTC), version, records, prices, lower, upper, elapsed * 1000,
                              key_id, capped, role)
        )
        if rollout.active:
            score_off_path(self.offpath, rollout, model, answering, ids, records)
        metrics.answered(version, role, "ok").inc(len(prices))
        latency.observe(elapsed)
        metrics.model_latency(version, role).observe(elapsed)
        return Answered(version, ids, prices, lower, upper, capped)
