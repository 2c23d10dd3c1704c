"""``GET /health`` (the process is alive), ``GET /ready`` (a warm model answers) and ``GET /metrics``."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.openapi import ResponseSpec

from serving import metrics
from serving.dependencies import Draining, Store
from serving.schemas import Status


class HealthController(Controller):
    tags = ["health"]

    @get("/health", summary="The process is alive")
    async def health(self) -> Status:
        return Status(status="alive")

    @get(
        "/ready",
        summary="200 when a model is loaded and warm; 503 before that and while shutting down",
        responses={503: ResponseSpec(Status, description="Not ready")},
    )
    async def ready(self, store: Store, draining: Draining) -> Response[Status]:
        model = store.current
        if draining:
            return Response(Status(status="draining", model_version=model and model.version), status_code=503)
        detail = store.registry_error
        if model is None:
            return Response(Status(status="loading", detail=detail), status_code=503)
        return Response(Status(status="ready", model_version=model.version, detail=detail), status_code=200)

    @get("/metrics", summary="Prometheus metrics", include_in_schema=True, media_type="text/plain")
    async def metrics(self) -> Response[bytes]:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)
