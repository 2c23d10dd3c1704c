"""The API's dependencies: one Litestar provider per service a handler takes, all made once per worker process.

A handler names the ones it needs (``store: Store``, ``pricing: Prices``...). Each is handed over
as it is (``skip_validation``): Litestar would otherwise convert these objects of locks, threads
and connections for every request.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar.di import Provide
from litestar.params import Dependency

from price_platform.datasets import DatasetSpec
from price_platform.settings import Settings
from serving.cache import SharedStore
from serving.model_store import ModelStore
from serving.prediction_log import PredictionLog
from serving.pricing import Pricing
from serving.schemas import RequestSchemas
from serving.services import Services

_AS_IT_IS = Dependency(skip_validation=True)

ServingSettings = Annotated[Settings, _AS_IT_IS]
DataSet = Annotated[DatasetSpec, _AS_IT_IS]
Schemas = Annotated[RequestSchemas, _AS_IT_IS]
#: The loaded champion and the rollout beside it.
Store = Annotated[ModelStore, _AS_IT_IS]
#: Redis (or this process's memory): the price cache, the rate limits, promotion announcements.
Shared = Annotated[SharedStore, _AS_IT_IS]
PredictionLogWriter = Annotated[PredictionLog, _AS_IT_IS]
Prices = Annotated[Pricing, _AS_IT_IS]
#: The platform database (None: none configured).
PlatformDsn = Annotated[str | None, _AS_IT_IS]
#: True once the process was told to shut down (``/ready`` answers 503 from then on).
Draining = Annotated[bool, _AS_IT_IS]


def _made_once(value: Any) -> Provide:
    return Provide(lambda: value, sync_to_thread=False, use_cache=True)


def dependencies(services: Services) -> dict[str, Provide]:
    """The providers of ``services``, by the parameter name handlers give them (for the app's ``dependencies``)."""
    return {
        "settings": _made_once(services.settings),
        "spec": _made_once(services.spec),
        "schemas": _made_once(services.schemas),
        "store": _made_once(services.store),
        "shared": _made_once(services.shared),
        "prediction_log": _made_once(services.log),
        "pricing": _made_once(services.pricing),
        "dsn": _made_once(services.dsn),
        "draining": Provide(lambda: services.draining, sync_to_thread=False),  # read for every request
    }
