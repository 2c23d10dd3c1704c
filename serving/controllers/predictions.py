"""``POST /predict`` and ``POST /explain``: prices with intervals, and the reasons for one price."""

from __future__ import annotations

import math
import os
import time
import uuid
from datetime import UTC, datetime

from litestar import Controller, Request, post
from litestar.exceptions import ServiceUnavailableException, ValidationException

from serving import metrics
from serving.guards import requires
from serving.model_store import LoadedModel
from serving.openapi import json_body
from serving.prediction_log import LoggedPrediction
from serving.schemas import Explanation, InvalidInput, Prediction, PredictResponse, decode
from serving.services import Services

HOW_TO_READ = (
    "contributions are SHAP values of the model's log-price output, one per input feature (a derived "
    "feature's value is shared equally by the inputs it is computed from); base_value + sum(contributions) "
    "= log_price and price = exp(log_price). For the blend of kernel ridge and XGBoost, the tree member's "
    "SHAP values and base value are scaled by its voting share, and the kernel ridge member's log prediction "
    "times its share is the one term named 'kernel_ridge'."
)


def new_ids(count: int) -> list[uuid.UUID]:
    """Random (version 4) UUIDs, from one read of the system's random source."""
    entropy = os.urandom(16 * count)
    return [uuid.UUID(bytes=entropy[i : i + 16], version=4) for i in range(0, 16 * count, 16)]


def serving_model(services: Services) -> LoadedModel:
    model = services.store.current
    if model is None:
        raise ServiceUnavailableException("no model is loaded yet", headers={"Retry-After": "1"})
    return model


def invalid(error: InvalidInput, model: LoadedModel) -> ValidationException:
    metrics.PREDICTIONS.labels(model_version=model.version, outcome="error").inc()
    return ValidationException(str(error), extra={"record": error.record, "field": error.field})


class PredictionsController(Controller):
    """Prices from the current champion."""

    tags = ["predictions"]
    guards = [requires("predict")]

    @post(
        "/predict",
        status_code=200,
        operation_class=json_body("PredictRequest", "One record, or a JSON array of records (a batch)."),
        summary="Price one record or a batch, each with a 90% interval, the model version and a prediction id",
    )
    async def predict(self, request: Request, services: Services) -> PredictResponse:
        started = time.perf_counter()
        model = serving_model(services)
        try:
            data = decode(services.schemas.predict_decoder, await request.body())
        except InvalidInput as error:
            raise invalid(error, model) from None
        records = data if isinstance(data, list) else [data]
        prices = await services.prices(model, records)
        spread = math.exp(model.interval_log_halfwidth)
        predictions = [
            Prediction(prediction_id=prediction_id, price=price, lower=price / spread, upper=price * spread,
                       model_version=model.version)
            for price, prediction_id in zip(prices, new_ids(len(prices)), strict=True)
        ]
        elapsed = time.perf_counter() - started
        principal = request.state.principal
        now = datetime.now(UTC)
        services.log.add(
            LoggedPrediction(p.prediction_id, now, model.version, record, p.price, p.lower, p.upper, elapsed * 1000,
                             principal.key_id)
            for p, record in zip(predictions, records, strict=True)
        )
        metrics.PREDICTIONS.labels(model_version=model.version, outcome="ok").inc(len(predictions))
        metrics.PREDICTION_LATENCY.labels(endpoint="predict").observe(elapsed)
        return PredictResponse(model_version=model.version, predictions=predictions)

    @post(
        "/explain",
        status_code=200,
        operation_class=json_body("ExplainRequest", "One record."),
        summary="Per-feature contributions (the model's own SHAP values) that add up to the prediction",
    )
    async def explain(self, request: Request, services: Services) -> Explanation:
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
        metrics.PREDICTION_LATENCY.labels(endpoint="explain").observe(time.perf_counter() - started)
        return Explanation(
            model_version=model.version,
            price=math.exp(margin),
            log_price=margin,
            base_value=base,
            contributions=per_input,
            model_feature_contributions=per_column,
            how_to_read=HOW_TO_READ,
        )
