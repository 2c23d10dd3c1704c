"""Route guards: the caller's API key and role, and the per-key rate limit."""

from __future__ import annotations

import asyncio
import time

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler

from serving import metrics
from serving.auth import ANONYMOUS_ADMIN, HEADER, Principal
from serving.services import Services

_MIN_REFRESH_SECONDS = 1.0


async def _principal(connection: ASGIConnection, services: Services) -> Principal:
    if not services.settings.auth_enabled:
        return ANONYMOUS_ADMIN
    presented = connection.headers.get(HEADER)
    principal = services.keys.check(presented)
    if principal is None and presented and time.monotonic() - services.keys.loaded_at > _MIN_REFRESH_SECONDS:
        await asyncio.to_thread(services.keys.refresh)  # a key created since the last refresh
        principal = services.keys.check(presented)
    if principal is None:
        raise NotAuthorizedException(f"a valid API key is required in the {HEADER} header")
    return principal


def requires(role: str):
    """A guard admitting keys with ``role`` (or ``admin``); prediction roles are also rate-limited."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        services: Services = connection.app.state.services
        principal = await _principal(connection, services)
        if not principal.may(role):
            raise PermissionDeniedException(f"this API key has the role {principal.role!r}; {role!r} is needed")
        connection.state.principal = principal
        if role == "predict":
            identity = principal.key_id or (connection.client.host if connection.client else "anonymous")
            allowed, retry_after = await services.shared.allow(identity)
            if not allowed:
                metrics.RATE_LIMITED.inc()
                raise TooManyRequestsException(
                    f"rate limit of {services.settings.rate_limit_per_minute} requests per minute reached",
                    headers={"Retry-After": str(retry_after)},
                )

    guard.__name__ = f"requires_{role}"
    return guard
