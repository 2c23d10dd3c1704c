"""The prediction API: :func:`create_app` builds the Litestar application from the settings.

The lifespan opens what the handlers share (Redis, the prediction-log writer, the API keys)
and starts following the ``champion`` alias; ``/ready`` answers 503 until the first model is
loaded and warm. On the way out it stops following, writes the buffered logs and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from litestar import Litestar, Request, Response
from litestar.config.compression import CompressionConfig
from litestar.exceptions import ValidationException
from litestar.exceptions.responses import create_exception_response
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Receive, Scope, Send

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.settings import Settings, get_settings
from price_platform.warehouse import platform_server
from serving import auth, compression, metrics, mlflow_client
from serving.batching import MicroBatcher
from serving.cache import SharedStore, redis_client
from serving.controllers.admin import AdminController
from serving.controllers.feedback import FeedbackController
from serving.controllers.health import HealthController
from serving.controllers.inference_protocol import inference_protocol
from serving.controllers.model import ModelController
from serving.controllers.predictions import PredictionsController
from serving.dependencies import dependencies
from serving.model_store import ModelStore
from serving.openapi import API_KEY, components, document_contract, swagger_assets, swagger_page
from serving.prediction_log import PredictionLog, pii_key
from serving.pricing import Pricing, count_refusal
from serving.rollout import OffPathScorer
from serving.schemas import InvalidInput, build_schemas
from serving.services import Services, UnpriceableRecords

log = logging.getLogger(__name__)

#: How long a thread holds the interpreter lock while another waits for it (CPython: 5 ms). The
#: event loop, a large batch's two threads (:mod:`serving.blend`) and the log writer hand it to
#: each other; at 5 ms a hand-off could wait that long. Measured here with 0.2 ms: 1,000-record
#: batches about 2.5% faster and the p99 of single-record load 19-23 ms instead of 27-30 ms, at
#: the same throughput.
SWITCH_INTERVAL_SECONDS = 0.0002


def platform_dsn(settings: Settings) -> str:
    """The platform database (migrated), for logs, keys and the audit log."""
    return platform_server(settings).dsn()


def create_app(settings: Settings, *, spec: DatasetSpec | None = None, dsn: str | None = None) -> Litestar:
    """The API for ``settings``' data set and registered model (``dsn``: the platform database)."""
    spec = spec or load_dataset(settings.dataset)
    schemas = build_schemas(spec, settings.max_batch_size)
    redis = redis_client(settings.redis_url) if settings.redis_url else None
    shared = SharedStore(redis=redis, limit_per_minute=settings.rate_limit_per_minute)
    store = ModelStore(settings=settings, spec=spec, record_type=schemas.record, dsn=dsn)
    prediction_log = PredictionLog(
        dsn, capacity=settings.log_buffer_size, pii=spec.pii, pii_key=pii_key(settings),
        spill_dir=settings.log_spill, spill_rows=settings.log_spill_rows,
    )
    batcher = MicroBatcher(window=settings.batch_window_ms / 1000)
    offpath = OffPathScorer(dsn, capacity=settings.log_buffer_size, serving=store.serving_roles)
    services = Services(
        settings=settings, spec=spec, schemas=schemas, store=store, shared=shared, log=prediction_log,
        keys=auth.KeyRing(dsn), dsn=dsn, batcher=batcher, offpath=offpath,
        pricing=Pricing(spec=spec, store=store, shared=shared, batcher=batcher, log=prediction_log, offpath=offpath),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services.log.start()
        await asyncio.to_thread(services.keys.refresh)
        tasks = [
            asyncio.create_task(services.store.watch(redis), name="follow-champion"),
            asyncio.create_task(_refresh_keys(services), name="refresh-keys"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(services.log.stop)
            await asyncio.to_thread(services.offpath.stop)  # the queued shadow and pairing scores are written
            await shared.close()

    body_components = components(schemas.openapi_components())
    security = Components(security_schemes={API_KEY: SecurityScheme(type="apiKey", name=auth.HEADER, security_scheme_in="header")})
    app = Litestar(
        route_handlers=[
            PredictionsController, FeedbackController, ModelController, HealthController, AdminController,
            swagger_assets(), inference_protocol(),
        ],
        exception_handlers={InvalidInput: invalid_input, UnpriceableRecords: unpriceable},
        dependencies=dependencies(services),
        lifespan=[lifespan],
        middleware=[metrics.count_requests, _log_waits_for_quiet],
        after_exception=[metrics.count_unrouted],
        compression_config=CompressionConfig(
            backend="gzip", minimum_size=compression.MINIMUM_SIZE, gzip_compress_level=1,
            exclude_opt_key=compression.OWN_COMPRESSION,
        ),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="price-platform prediction API",
            version="1",
            description=f"Prices for {spec.name} records from the registered model {settings.model_name}@champion.",
            components=[security],
            render_plugins=[swagger_page()],
            path="/schema",
        ),
    )
    app.state.services = services
    _document(app, body_components, auth_enabled=settings.auth_enabled)
    return app


def _log_waits_for_quiet(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: every HTTP request is in flight for the prediction-log writer until its answer is sent."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        with scope["app"].state.services.log.handling():
            await app(scope, receive, send)

    return middleware


def invalid_input(request: Request, error: InvalidInput) -> Response:
    """400 naming where the body is at fault, as Litestar answers a :class:`ValidationException`; a prediction route's
    refusal counts as an error of the model that was to answer it."""
    count_refusal(request)
    return create_exception_response(request, ValidationException(str(error), extra=error.extra))


def unpriceable(request: Request, error: UnpriceableRecords) -> Response:
    """422 naming the records the model cannot price: the client's input, never a server error."""
    return Response(
        {"status_code": 422, "detail": str(error), "extra": {"records": error.records}}, status_code=422
    )


def _document(app: Litestar, bodies: Components, *, auth_enabled: bool) -> None:
    """Add the msgspec-made body schemas to the components Litestar generates, and each route's security and errors."""
    openapi = app.openapi_schema  # built once and cached by Litestar
    openapi.components.schemas = {**(openapi.components.schemas or {}), **(bodies.schemas or {})}
    document_contract(app, openapi, auth_enabled=auth_enabled)


async def _refresh_keys(services: Services) -> None:
    while True:
        await asyncio.sleep(auth.REFRESH_SECONDS)
        await asyncio.to_thread(services.keys.refresh)


def app_from_environment() -> Litestar:
    """The app for ``uvicorn --factory`` (each worker of ``price-platform serve``): the process-wide setup (the
    interpreter's switch interval, MLflow's client retries), settings from the environment, database started if embedded."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    mlflow_client.configure()
    settings = get_settings()
    return create_app(settings, dsn=platform_dsn(settings))
