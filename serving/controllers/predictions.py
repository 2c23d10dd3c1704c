"""``POST /predict`` and ``POST /explain``: prices with intervals, and the reasons for one price.

``/predict`` is answered by the champion, or by the challenger for the requests of its canary
share (:meth:`serving.rollout.Rollout.canary_for`; a canary that fails is replaced by the
champion for that request), as :meth:`serving.pricing.Pricing.answer` answers every prediction
route. A body the schema refuses is answered with 400 by the app's exception handler.
"""

from __future__ import annotations

import math
import time

import msgspec
from litestar import Controller, Request, Response, post
from litestar.exceptions import ServiceUnavailableException

from serving import metrics
from serving.compression import OWN_COMPRESSION, json_answer
from serving.dependencies import Prices, Schemas, Store
from serving.guards import requires
from serving.openapi import ERRORS, json_body
from serving.pricing import NO_MODEL, expecting_a_row, serving_model
from serving.schemas import Explanation, Prediction, PredictResponse, decode

HOW_TO_READ = (
    "contributions are SHAP values of the model's log-price output, one per input feature (a derived "
    "feature's value is shared equally by the inputs it is computed from); base_value + sum(contributions) "
    "= log_price and price = exp(log_price). For the blend of kernel ridge and XGBoost, the tree member's "
    "SHAP values and base value are scaled by its voting share, and the kernel ridge member's log prediction "
    "times its share is the one term named 'kernel_ridge'."
)

PREDICT_LATENCY = metrics.PREDICTION_LATENCY.labels(endpoint="predict")
EXPLAIN_LATENCY = metrics.PREDICTION_LATENCY.labels(endpoint="explain")


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
    async def predict(self, request: Request, store: Store, schemas: Schemas, pricing: Prices) -> Response[PredictResponse]:
        started = time.perf_counter()
        model = serving_model(request, store)
        body = await request.body()
        data = decode(schemas.predict_decoder, body)
        records = data if isinstance(data, list) else [data]
        done = await pricing.answer(model, records, body, request.state.principal.key_id, started, PREDICT_LATENCY)
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
    async def explain(self, request: Request, store: Store, schemas: Schemas, pricing: Prices) -> Explanation:
        started = time.perf_counter()
        model = serving_model(request, store)
        record = decode(schemas.explain_decoder, await request.body())
        explained = pricing.explain(model, record)
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
