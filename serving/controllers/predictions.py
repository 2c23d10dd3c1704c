"""``POST /predict`` and ``POST /explain``: prices with intervals, and the reasons for one price.

``/predict`` is answered by the champion, or by the challenger for the requests of its canary
share (:meth:`serving.rollout.Rollout.canary_for`; a canary that fails is replaced by the
champion for that request). Once the answer is computed and logged, the shadow's (and, beside
a canary's answer, the champion's) scores are queued for the off-path scorer, which runs
after the answer is sent.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
from litestar import Controller, Request, Response, post
from litestar.exceptions import ServiceUnavailableException, ValidationException
from litestar.types import ASGIApp, Receive, Scope, Send

from serving import metrics
from serving.compression import OWN_COMPRESSION, json_answer
from serving.fast_path import capped_flags
from serving.guards import requires
from serving.model_store import LoadedModel
from serving.openapi import ERRORS, json_body
from serving.prediction_log import LoggedPredictions
from serving.rollout import CANARY_ROLE, CHAMPION_ROLE, SHADOW_ROLE, OffPathScorer, Rollout
from serving.schemas import Explanation, InvalidInput, Prediction, PredictResponse, decode
from serving.services import Services, SharedServices

log = logging.getLogger(__name__)

NO_MODEL = "No model is loaded yet (`Retry-After` says when to ask again)."
HOW_TO_READ = (
    "contributions are SHAP values of the model's log-price output, one per input feature (a derived "
    "feature's value is shared equally by the inputs it is computed from); base_value + sum(contributions) "
    "= log_price and price = exp(log_price). For the blend of kernel ridge and XGBoost, the tree member's "
    "SHAP values and base value are scaled by its voting share, and the kernel ridge member's log prediction "
    "times its share is the one term named 'kernel_ridge'."
)


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


PREDICT_LATENCY = metrics.PREDICTION_LATENCY.labels(endpoint="predict")
EXPLAIN_LATENCY = metrics.PREDICTION_LATENCY.labels(endpoint="explain")


def serving_model(services: Services) -> LoadedModel:
    model = services.store.current
    if model is None:
        raise ServiceUnavailableException("no model is loaded yet", headers={"Retry-After": "1"})
    return model


def invalid(error: InvalidInput, model: LoadedModel) -> ValidationException:
    metrics.answered(model.version, CHAMPION_ROLE, "error").inc()
    return ValidationException(str(error), extra={"record": error.record, "field": error.field})


def expecting_a_row(app: ASGIApp) -> ASGIApp:
    """Route middleware: the micro-batcher counts a ``/predict`` request as on its way from its first byte,
    and the off-path scorer as in flight until its answer is sent."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        services = scope["app"].state.services
        with services.batcher.expecting(), services.offpath.handling():
            await app(scope, receive, send)

    return middleware


async def canary_prices(
    services: Services, canary: LoadedModel, champion: LoadedModel, records: list
) -> tuple[str, LoadedModel, np.ndarray]:
    """(role, model, prices) of a request routed to the canary; the champion's when the canary fails on it."""
    try:
        return CANARY_ROLE, canary, await services.prices(canary, records)
    except Exception as error:  # noqa: BLE001 (the canary's failure is not the client's: the champion answers)
        metrics.CANARY_FALLBACKS.inc()
        log.warning("canary version %s failed on a request (%r); the champion %s answers it",
                    canary.version, error, champion.version)
        return CHAMPION_ROLE, champion, await services.prices(champion, records)


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


async def answer_records(
    services: Services, model: LoadedModel, records: list, body: bytes, key_id: str | None,
    started: float, latency: Any,
) -> Answered:
    """Price ``records`` as every prediction route does (``/predict``, ``/v2/.../infer``).

    The champion answers, or the canary for its share of keys (of bodies without a key); the
    answer is logged under ``key_id``, queued for the shadow, counted, and its time since
    ``started`` observed on ``latency`` (the route's histogram) and per version and role.
    """
    rollout = services.store.rollout
    answering = model
    if rollout.canary is not None:
        answering = rollout.canary_for(key_id.encode() if key_id else body) or model
    if answering is model:
        role, values = CHAMPION_ROLE, await services.prices(model, records)
    else:
        role, answering, values = await canary_prices(services, answering, model, records)
    spread = math.exp(answering.interval_log_halfwidth)
    prices, lower, upper = values.tolist(), (values / spread).tolist(), (values * spread).tolist()
    ids = new_ids(len(prices))
    version = answering.version
    capped = capped_flags(values, answering.predictor.band)
    elapsed = time.perf_counter() - started
    services.log.add(
        LoggedPredictions(ids, datetime.now(UTC), version, records, prices, lower, upper, elapsed * 1000,
                          key_id, capped, role)
    )
    if rollout.active:
        score_off_path(services.offpath, rollout, model, answering, ids, records)
    metrics.answered(version, role, "ok").inc(len(prices))
    latency.observe(elapsed)
    metrics.model_latency(version, role).observe(elapsed)
    return Answered(version, ids, prices, lower, upper, capped)


class PredictionsController(Controller):
    """Prices from the current champion."""

    tags = ["predictions"]
    before_request = requires("predict")

    @post(
        "/predict",
        status_code=200,
        operation_class=json_body("PredictRequest", "One record, or a JSON array of records (a batch)."),
        summary="Price one record or a batch, each with a 90% interval, the model version and a prediction id",
        middleware=[expecting_a_row],
        opt={OWN_COMPRESSION: True, ERRORS: {
            422: "The model gives no finite positive price for some records (values far outside its training data); "
                 "`extra.records` lists their indexes.",
            503: NO_MODEL,
        }},
    )
    async def predict(self, request: Request, services: SharedServices) -> Response[PredictResponse]:
        started = time.perf_counter()
        model = serving_model(services)
        body = await request.body()
        try:
            data = decode(services.schemas.predict_decoder, body)
        except InvalidInput as error:
            raise invalid(error, model) from None
        records = data if isinstance(data, list) else [data]
        done = await answer_records(
            services, model, records, body, request.state.principal.key_id, started, PREDICT_LATENCY
        )
        version = done.version
        predictions = [
            Prediction(prediction_id=i, price=p, lower=low, upper=high, model_version=version, capped=c)
            for i, p, low, high, c in zip(done.ids, done.prices, done.lower, done.upper, done.capped, strict=True)
        ]
        return json_answer(request, msgspec.json.encode(PredictResponse(model_version=version, predictions=predictions)))

    @post(
        "/explain",
        status_code=200,
        operation_class=json_body("ExplainRequest", "One record."),
        summary="Per-feature contributions (the model's own SHAP values) that add up to the prediction",
        opt={ERRORS: {503: "No model is loaded yet, or the served model is not a tree model this server can explain."}},
    )
    async def explain(self, request: Request, services: SharedServices) -> Explanation:
        started = time.perf_counter()
        model = serving_model(services)
        try:
            record = decode(services.schemas.explain_decoder, await request.body())
        except InvalidInput as error:
            raise invalid(error, model) from None
        explained = services.explain(model, record)
        if explained is None:
            raise ServiceUnavailableException(f"model version {model.version} is not a tree model this server can explain")
        per_input, per_column, base, margin = explained
        EXPLAIN_LATENCY.observe(time.perf_counter() - started)
        return Explanation(
            model_version=model.version,
            price=math.exp(margin),
            log_price=margin,
            base_value=base,
            contributions=per_input,
            model_feature_contributions=per_column,
            how_to_read=HOW_TO_READ,
        )
