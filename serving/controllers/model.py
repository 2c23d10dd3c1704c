"""``GET /model-info``: which model answers, how it was trained, what it takes, and the rollout beside it."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, get

from serving.dependencies import Schemas, Store
from serving.guards import requires
from serving.openapi import ERRORS
from serving.pricing import NO_MODEL, serving_model
from serving.schemas import ArtifactRefusal, ModelInfo


class RolloutInfo(msgspec.Struct, kw_only=True):
    """The versions serving beside the champion: the shadow (scores every request, answers none) and the canary."""

    shadow_version: str | None  # alias ``shadow``, loaded
    canary_version: str | None  # alias ``challenger``, loaded, answering ``canary_share`` of the requests
    canary_share: float  # sticky per API key (without one: per request body)


class ServedModelInfo(ModelInfo, kw_only=True):
    """:class:`~serving.schemas.ModelInfo` of the champion, with the rollout beside it."""

    rollout: RolloutInfo
    registry_error: str | None  # why the last poll of the model registry failed (None: it answered)


class ModelController(Controller):
    tags = ["model"]
    before_request = requires("predict")

    @get("/model-info", summary="Version, alias, training metrics, data version and feature schema of the served model,"
         " and the shadow and canary beside it", opt={ERRORS: {503: NO_MODEL}})
    async def model_info(self, request: Request, store: Store, schemas: Schemas) -> ServedModelInfo:
        model = serving_model(request, store)
        return ServedModelInfo(
            name=model.name,
            version=model.version,
            alias="champion",
            run_id=model.run_id or None,
            data_version=model.data_version or None,
            interval_log_halfwidth=model.interval_log_halfwidth,
            metrics={key: value for key, value in model.metrics.items() if key.startswith("holdout_")},
            fast_path=model.predictor.fast,
            loaded_at=model.loaded_at,
            feature_schema=schemas.record_json_schema(),
            artifact_verified=store.dsn is not None,
            artifact_refusals=[ArtifactRefusal(**vars(r)) for r in store.artifact_refusals],
            rollout=RolloutInfo(**store.rollout.describe()),
            registry_error=store.registry_error,
        )
