"""``GET /model-info``: which model answers, how it was trained and what it takes."""

from __future__ import annotations

from litestar import Controller, get

from serving.controllers.predictions import NO_MODEL, serving_model
from serving.guards import requires
from serving.openapi import ERRORS
from serving.schemas import ArtifactRefusal, ModelInfo
from serving.services import SharedServices


class ModelController(Controller):
    tags = ["model"]
    before_request = requires("predict")

    @get("/model-info", summary="Version, alias, training metrics, data version and feature schema of the served model",
         opt={ERRORS: {503: NO_MODEL}})
    async def model_info(self, services: SharedServices) -> ModelInfo:
        model = serving_model(services)
        return ModelInfo(
            name=model.name,
            version=model.version,
            alias="champion",
            run_id=model.run_id or None,
            data_version=model.data_version or None,
            interval_log_halfwidth=model.interval_log_halfwidth,
            metrics={key: value for key, value in model.metrics.items() if key.startswith("holdout_")},
            fast_path=model.predictor.fast,
            loaded_at=model.loaded_at,
            feature_schema=services.schemas.record_json_schema(),
            artifact_verified=services.store.dsn is not None,
            artifact_refusals=[ArtifactRefusal(**vars(r)) for r in services.store.artifact_refusals],
        )
